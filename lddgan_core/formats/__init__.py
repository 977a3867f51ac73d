"""Files: our one-file model format (``lddgan_file``), the official checkpoint import (``official``) and the
pickle-free reading of foreign checkpoints (``safe_load``)."""
