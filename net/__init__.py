"""Detector builders (torchvision Faster / Mask R-CNN)."""
