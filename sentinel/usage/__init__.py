"""Usage: token counts as providers report them, and the records that carry them to the sinks."""
