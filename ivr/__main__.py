"""``python -m ivr``: the same command line as ``ivr``, where the script is not on PATH."""

from ivr.cli import main

main(prog_name="ivr")
