"""Data: procedural shapes (``shapes``) and image files (``images``: load, 8-bit conversion, grids, PNG)."""
