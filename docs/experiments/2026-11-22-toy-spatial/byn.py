"""Position or spatial accuracy of a toy checkpoint by number of objects in the scene.

    python byn.py CHECKPOINT [position|spatial]     (128 fresh scenes per object count, seed 3)

byn_*.log / bynsp_*.log are this script's output on runs C, S_L1_w1, S_L2_w1 (position / spatial).
"""

import sys
from collections import defaultdict

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import vrp.world.train as T
from vrp.models.base import adapter_for
from vrp.world.questions import spatial_question
from vrp.world.scene import WorldConfig, WorldStats, render, sample_scene

torch.set_num_threads(1)
path = sys.argv[1]
task = sys.argv[2] if len(sys.argv) > 2 else "position"
make = T.position_question if task == "position" else spatial_question
model = AutoModelForImageTextToText.from_pretrained(path).eval()
proc = AutoProcessor.from_pretrained(path)
ad = adapter_for(model.config.model_type)(model=model, processor=proc, path=path)
tok = ad.tokenizer
rng = np.random.default_rng(3)
res = defaultdict(list)
for n in (1, 2, 3, 5) if task == "position" else (2, 3, 5):
    wc = WorldConfig(min_objects=n, max_objects=n)
    ws = WorldStats.from_config(wc)
    items = []
    while len(items) < 128:
        sc = sample_scene(rng, wc, ws)
        q = make(sc, rng)
        if q:
            items.append((render(sc, wc), q.question, q.answer))
    with torch.no_grad():
        for s in range(0, 128, 64):
            ch = items[s : s + 64]
            enc = ad.encode([x[0] for x in ch], [ad.prompt(x[1]) for x in ch], padding_side="left")
            pred = model(**enc).logits[:, -1].argmax(-1).tolist()
            res[n] += [tok.decode([p]) == x[2] for x, p in zip(ch, pred)]
    print("n_objects", n, task, "acc", round(float(np.mean(res[n])), 3))
