"""Annotators: the image -> control-image models behind the preprocessor nodes.

* ``files`` — where annotator weights live (``models/annotators/``, under their usual file
  names) and reading them safely; a missing file is an error naming it, never a download.
* ``frames`` — IMAGE tensors to uint8 pictures at the detection resolution and back.
* ``models`` — the weight-needing annotators (controlnet-aux's network code, our loading).
* ``classic`` — the weights-free ones (Canny, content shuffle, standard lineart, tile).
* ``mediapipe_pose`` — body, hand and face landmarks from the weights inside the ``mediapipe``
  wheel, drawn as an OpenPose skeleton; person and face masks.
"""
