"""Annotation records, dataset loaders (VOC, COCO, image folders, built-in demo), torch dataset and transforms."""

from datasets.records import AnnotationError, Record, RecordSet, load_records, save_records

__all__ = ["AnnotationError", "Record", "RecordSet", "load_records", "save_records"]
