"""Distribution: the models shipped in the package (``shipped``), the weights manifest and installs (``zoo``),
verified resumable downloads (``download``)."""
