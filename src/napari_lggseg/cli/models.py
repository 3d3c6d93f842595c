"""``lggseg models``: list, rename, delete, export and import models, fetch the reference."""

from __future__ import annotations

from pathlib import Path

from ._common import CLIError, fmt, print_table


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("models", help="list, rename, delete, export or import models")
    msub = p.add_subparsers(dest="action", metavar="ACTION")
    msub.add_parser("list", help="the shipped and user models (default)")
    q = msub.add_parser("rename", help="rename a user model")
    q.add_argument("old")
    q.add_argument("new")
    q = msub.add_parser("delete", help="delete a user model")
    q.add_argument("name")
    q = msub.add_parser("export", help="copy a model folder (weights + card) into DEST")
    q.add_argument("name")
    q.add_argument("dest")
    q = msub.add_parser("import", help="add an exported model folder to the user store")
    q.add_argument("folder")
    q.add_argument("--name", help="store it under this name")
    msub.add_parser(
        "download-reference", help="fetch Buda et al.'s published weights (needs a network)"
    )
    p.set_defaults(run=run)


def _list() -> None:
    from .. import models

    infos = models.list_models(unusable=True)
    if not infos:
        print(f"no models installed (user store: {models.user_model_dir()})")
        return
    print_table(
        [
            [
                i.name,
                "shipped" if i.shipped else "user",
                "" if i.problem else fmt(i.val_dice),
                "" if i.problem else i.parent or "",
                str(i.card.get("created", ""))[:16].replace("T", " "),
                f"unusable: {i.problem}" if i.problem else "ok",
            ]
            for i in infos
        ],
        ["name", "kind", "val Dice", "parent", "created", "status"],
    )
    print(f"\nuser models: {models.user_model_dir()}")


def run(args) -> int:
    from .. import models

    action = args.action or "list"
    if action == "list":
        _list()
    elif action == "rename":
        info = models.rename_model(args.old, args.new)
        print(f"renamed {args.old} to {info.name}")
    elif action == "delete":
        models.delete_model(args.name)
        print(f"deleted {args.name}")
    elif action == "export":
        dest = Path(args.dest)
        if not dest.is_dir():
            raise CLIError(f"{dest}: no such folder")
        print(f"exported {args.name} to {models.export_model(args.name, dest)}")
    elif action == "import":
        info = models.import_model(args.folder, args.name)
        print(f"imported {info.name} into {info.path}")
    elif action == "download-reference":
        info = models.download_reference()
        print(
            f"reference weights stored as {info.name} in {info.path} (trained on patients outside our "
            "splits: for comparison only)"
        )
    return 0
