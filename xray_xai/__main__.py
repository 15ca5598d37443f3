"""``python -m xray_xai`` runs the command line."""

from xray_xai.cli import main

main()
