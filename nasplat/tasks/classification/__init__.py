"""Image classification on an Once-for-All-style MobileNetV3 space: nasplat's second task."""
