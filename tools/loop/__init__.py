"""The run loop: the only layer that reads the command line's options and the Run."""
