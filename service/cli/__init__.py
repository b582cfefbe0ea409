"""The `gradual` command line and the demo."""
