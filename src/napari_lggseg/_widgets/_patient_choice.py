"""Which patient (or which image layers) a Segment tumour run takes: the form's patient choice
and its "Map image layers…" section, kept in step with the viewer's layers."""

from __future__ import annotations

from ..layer_meta import read_meta
from ..patients import RunInput, capture, capture_mapping, find_patients, image_layers
from ._forms import MAP_LAYERS, NO_LAYER


class PatientChoice:
    """The patient ComboBox and the mapping ComboBoxes of a Segment tumour form."""

    def __init__(self, form, layers):
        self.combo, self.mapping, self.layers = form.patient, form.mapping, layers

    @property
    def mapping_chosen(self) -> bool:
        return self.combo.value == MAP_LAYERS

    @property
    def patient_id(self) -> str | None:
        """The chosen patient; for mapped layers, the FLAIR layer's patient or its name."""
        if self.mapping_chosen:
            name = self.mapping.flair_layer.value
            return self.mapped_id(name) if name else None
        return self.combo.value

    def mapped_id(self, name: str) -> str:
        lgg = read_meta(self.layers[name]) if name in self.layers else None
        return lgg["patient_id"] if lgg else name

    def has(self, patient_id: str) -> bool:
        return patient_id in self.combo.choices

    def set(self, patient_id: str) -> None:
        if not self.has(patient_id):
            raise ValueError(f"patient {patient_id!r} has no open layers")
        self.combo.value = patient_id

    def refresh(self) -> None:
        """Patients with a FLAIR layer, then "Map image layers…"; the mapping lists every 3-D
        grayscale image. Choices still open are kept; no change signal is sent."""
        patients = find_patients(self.layers)
        choices = [(pid, pid) for pid, p in patients.items() if p.flair is not None]
        _refill(self.combo, choices + [("Map image layers…", MAP_LAYERS)])
        names = [(lyr.name, lyr.name) for lyr in image_layers(self.layers)]
        none = [("(none: use FLAIR)", NO_LAYER)]
        _refill(self.mapping.flair_layer, names)
        _refill(self.mapping.pre_contrast_layer, none + names)
        _refill(self.mapping.post_contrast_layer, none + names)
        self.mapping.visible = self.mapping_chosen

    def capture(self) -> RunInput:
        """The run's input, bound now (see :func:`napari_lggseg.patients.capture`)."""
        if self.mapping_chosen:
            flair, pre, post = (
                self._layer(c)
                for c in (self.mapping.flair_layer, self.mapping.pre_contrast_layer,
                          self.mapping.post_contrast_layer)
            )  # fmt: skip
            patient = find_patients(self.layers).get(self.mapped_id(flair.name)) if flair else None
            return capture_mapping(flair, pre, post, patient.ground_truth if patient else None)
        patient = find_patients(self.layers).get(self.combo.value)
        if patient is None:
            raise ValueError(
                "no patient is open: open a patient folder or File ▸ Open Sample, "
                "or map image layers to FLAIR / pre / post-contrast"
            )
        return capture(patient)

    def flair_layer(self):
        """The FLAIR layer a run would take now (mapped or the patient's), or None."""
        if self.mapping_chosen:
            return self._layer(self.mapping.flair_layer)
        patient = find_patients(self.layers).get(self.combo.value)
        return patient.flair if patient else None

    def _layer(self, combo):
        name = combo.value
        return self.layers[name] if name and name in self.layers else None


def _refill(combo, choices) -> None:
    keep = combo.value
    with combo.changed.blocked():
        combo.choices = choices
        if keep in combo.choices:
            combo.value = keep
