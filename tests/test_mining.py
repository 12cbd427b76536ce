"""tools/mining.py: pre-annotations and their AL estimate, and imported rounds as merge results."""

import numpy as np
import pytest
import torch
from torch import nn

from asm.merge import ASMConfig
from datasets.records import Record, record_to_dict
from tools.labelling import results_from_imported
from tools.mining import Mirrored, preannotate


def _det(scores, labels, boxes):
    return {
        "scores": np.asarray(scores, np.float32),
        "labels": np.asarray(labels, np.int64),
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
    }


def test_preannotations_are_the_certain_boxes_and_the_estimate_their_uncertain_share():
    records = [Record("a", "a.jpg", 100, 100), Record("b", "b.jpg", 100, 100), Record("c", "c.jpg", 100, 100)]
    dets = [
        _det(
            [0.95, 0.9, 0.5, 0.1],
            [1, 2, 1, 1],
            [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [70, 0, 80, 9]],
        ),
        _det([0.4], [1], [[0, 0, 10, 10]]),
        _det([], [], []),
    ]
    pre, scores, estimates = preannotate(dets, records, ASMConfig(certain_thre=0.8, uncertain_thre=0.3))
    assert [len(p) for p in pre] == [2, 0, 0] and pre[0].labels.tolist() == [1, 2]
    assert np.allclose(scores[0], [0.95, 0.9])
    # a: 2 certain, 1 uncertain (0.1 is below uncertain_thre: not counted) -> 1/3; b: all uncertain;
    # c: nothing found, the human draws everything
    assert np.allclose(estimates, [1 / 3, 1.0, 1.0])


def test_imported_edits_become_merge_results_with_moves_counted():
    sa = Record("a", "a.jpg", 100, 100, [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [1, 1, 2])
    imported = {
        "records": [record_to_dict(sa)],
        "images": [
            {
                "added": 1,
                "moved": 1,
                "relabelled": 0,
                "confirmed": 1,
                "deleted": 2,
                "sl": [True, False, False],
                "moved_boxes": [False, True, False],
            }
        ],
        "preannotated": [4],
    }
    (result,) = results_from_imported(imported)
    assert result.drawn == 1 and result.confirmed == 1 and result.deleted == 2 and result.certain == 4
    assert result.ratio == 2 / 3 and result.moved.tolist() == [False, True, False]


class BrightSpot(nn.Module):
    """A stand-in detector: one box around the pixels brighter than 0.5."""

    def forward(self, images):
        outs = []
        for image in images:
            ys, xs = torch.where(image[0] > 0.5)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            outs.append({"boxes": box[None], "labels": torch.tensor([1]), "scores": torch.tensor([0.9])})
        return outs


def test_the_mirrored_view_maps_its_boxes_back_onto_the_image():
    image = torch.zeros(3, 20, 64)
    image[:, 5:9, 10:21] = 1.0  # columns 10-20: the mirrored image has it at columns 43-53
    mirrored = BrightSpot()([image.flip(-1)])[0]["boxes"]
    assert mirrored.tolist() == [[43.0, 5.0, 54.0, 9.0]]
    out = Mirrored(BrightSpot())([image, image[:, :, :40]])
    assert out[0]["boxes"].tolist() == [[10.0, 5.0, 21.0, 9.0]]  # back where the original has it
    assert out[1]["boxes"].tolist() == [[10.0, 5.0, 21.0, 9.0]]  # each image by its own width
    assert out[0]["labels"].tolist() == [1] and out[0]["scores"].tolist() == [pytest.approx(0.9)]
