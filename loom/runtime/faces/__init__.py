"""Faces: detection with real weights that registry packages ship (MTCNN, MediaPipe), alignment
to the standard 512 template, restoration with GFPGAN/CodeFormer/RestoreFormer models, and
pasting the result back with a feathered mask."""
