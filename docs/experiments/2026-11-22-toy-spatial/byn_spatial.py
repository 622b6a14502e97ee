import sys, numpy as np, torch
torch.set_num_threads(1)
from collections import defaultdict
from vrp.world.scene import WorldConfig, WorldStats, sample_scene, render
import vrp.world.train as T
from vrp.world.questions import spatial_question
from vrp.models.base import adapter_for
from transformers import AutoModelForImageTextToText, AutoProcessor
path = sys.argv[1]
model = AutoModelForImageTextToText.from_pretrained(path).eval()
proc = AutoProcessor.from_pretrained(path)
ad = adapter_for(model.config.model_type)(model=model, processor=proc, path=path)
tok = ad.tokenizer; rng = np.random.default_rng(3)
res = defaultdict(list)
for n in (2, 3, 5):
    wc = WorldConfig(min_objects=n, max_objects=n); ws = WorldStats.from_config(wc)
    items = []
    while len(items) < 128:
        sc = sample_scene(rng, wc, ws); q = spatial_question(sc, rng)
        if q: items.append((render(sc, wc), q.question, q.answer))
    with torch.no_grad():
        for s in range(0, 128, 64):
            ch = items[s:s+64]
            enc = ad.encode([x[0] for x in ch], [ad.prompt(x[1]) for x in ch], padding_side="left")
            pred = model(**enc).logits[:, -1].argmax(-1).tolist()
            res[n] += [tok.decode([p]) == x[2] for x, p in zip(ch, pred)]
    print("n_objects", n, "spatial acc", round(float(np.mean(res[n])), 3))
