"""`tunixrt bench`: measurements of this machine. Imports the library; nothing imports it."""
