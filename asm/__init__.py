"""The ASM rules as plain functions over detections and records: merge, pools, selection, edits, samplers."""
