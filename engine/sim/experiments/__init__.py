"""Published results reproduced with pyvs sim (docs/experiments/)."""
