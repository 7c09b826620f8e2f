"""``ctxconv-predict``: classify a user's images with an export, on any backend."""
