"""`python -m fedpdmm`: the same as the `fedpdmm` command."""

from fedpdmm.cli import main

main()
