"""`python -m calm.backbones ls [--markdown]`: list every backbone config (no weights are loaded)."""

from __future__ import annotations

import argparse

from calm.backbones.listing import backbone_rows, render


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m calm.backbones", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("ls", help="every backbone: family, heads captured, audio window, hub id, extras")
    listing.add_argument("--markdown", action="store_true", help="a Markdown table (as in the README)")
    args = parser.parse_args(argv)
    print(render(backbone_rows(), markdown=args.markdown))


if __name__ == "__main__":
    main()
