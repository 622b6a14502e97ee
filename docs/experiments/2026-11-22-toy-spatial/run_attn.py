import json, sys, time, os
import numpy as np, torch
torch.set_num_threads(1)
from dataclasses import replace
import vrp.world.train as T
from vrp.world.dataset import generate
from vrp.world.scene import render, WorldConfig

def build_eval_set(n_images, seed, wcfg):
    data, _ = generate(n_images, seed, wcfg)
    rng = np.random.default_rng(seed + 7)
    out = []
    for sq in data:
        img = render(sq.scene, wcfg)
        out.extend((img, q.question, q.answer, q.task) for q in sq.questions)
        pq = T.position_question(sq.scene, rng)
        if pq is not None:
            out.append((img, pq.question, pq.answer, "position"))
    return out
T.build_eval_set = build_eval_set
T.band_distance = lambda acc, band: sum(max(0.0, band[0]-a)+max(0.0, a-band[1]) for t, a in acc.items() if t != "position")

import vrp.world.toy as TOY
_bc = TOY.build_config
def build_config(*a, **k):
    c = _bc(*a, **k)
    h = int(os.environ.get("TEXT_HEADS", "0")); L = int(os.environ.get("TEXT_LAYERS", "0"))
    if h:
        c.text_config.num_attention_heads = h; c.text_config.num_key_value_heads = h
        c.text_config.head_dim = c.text_config.hidden_size // h
    if L:
        c.text_config.num_hidden_layers = L
        if getattr(c.text_config, "layer_types", None): c.text_config.layer_types = c.text_config.layer_types[:1] * L
    return c
TOY.build_config = build_config
if os.environ.get("KEEP_LAST"): T.band_distance = lambda acc, band: 0.0
name = sys.argv[1]; over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
wover = over.pop("world", {})
cfg = replace(T.TrainConfig(), threads=1, eval_every=500, **over)
wcfg = WorldConfig(**wover)
t0 = time.time()
def prog(r):
    print(r["step"], r["seconds"], {k: round(v, 3) for k, v in r["acc"].items()}, "vg", round(r["vision_grad_norm"], 3), "loss", round(r["loss"], 3), "asl", round(r.get("attn_sup_loss", -1), 3), flush=True)
log = T.train(cfg, os.path.join(os.environ.get("OUT", "runs/spatial-exp"), name), wcfg, progress=prog)
print("chosen", log["chosen"], "wall", round(time.time() - t0), flush=True)
