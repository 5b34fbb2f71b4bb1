"""Media front-ends: audio (log-mel segments), video (1 fps CLIP frames), text (tokens), and their cache."""
