"""Data: procedural shapes (``shapes``), emoji rendered offline from Noto Color Emoji (``emoji``), and image files
(``images``: load, 8-bit conversion, grids, PNG)."""
