"""``python -m daehwa`` runs the command line."""

from daehwa.cli import main

main()
