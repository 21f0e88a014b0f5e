"""ZoomNAS, the first task: whole-body pose (133 keypoints) with ZoomNet supernets."""
