"""The screens of the terminal UI, one file each."""
