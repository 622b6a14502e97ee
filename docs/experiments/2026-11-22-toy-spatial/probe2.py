import sys, numpy as np, torch
torch.set_num_threads(1)
from vrp.world.scene import WorldConfig, WorldStats, sample_scene, render
from vrp.models.base import adapter_for
from transformers import AutoModelForImageTextToText, AutoProcessor
path = sys.argv[1]
model = AutoModelForImageTextToText.from_pretrained(path).eval()
proc = AutoProcessor.from_pretrained(path)
ad = adapter_for(model.config.model_type)(model=model, processor=proc, path=path)
wcfg = WorldConfig(); ws = WorldStats.from_config(wcfg); rng = np.random.default_rng(5)
feats = {}
model.get_submodule(ad.module_paths["projector"]).register_forward_hook(lambda m, a, o: feats.__setitem__("proj", o.detach()))
scenes = [sample_scene(rng, wcfg, ws) for _ in range(600)]
Fs = []
with torch.no_grad():
    for s in range(0, 600, 50):
        imgs = [render(sc, wcfg) for sc in scenes[s:s+50]]
        enc = ad.encode(imgs, [ad.prompt("Describe the image.")]*50, padding_side="left")
        model(**enc); Fs.append(feats["proj"].reshape(50, 16, -1))
F = torch.cat(Fs).numpy()
def ridge_acc(Xtr, ytr, Xte, yte, k):
    mu = Xtr.mean(0); sd = Xtr.std(0) + 1e-6
    A = np.c_[(Xtr-mu)/sd, np.ones(len(Xtr))]; B = np.c_[(Xte-mu)/sd, np.ones(len(Xte))]
    Y = np.eye(k)[ytr]; W = np.linalg.solve(A.T@A + 1.0*np.eye(A.shape[1]), A.T@Y)
    return round(float(((B@W).argmax(1) == yte).mean()), 3)
N = len(F); D = F.shape[-1]
rows = np.tile(np.arange(16)//4, (N,1)); cols = np.tile(np.arange(16)%4, (N,1))
for nm, y in (("row", rows), ("col", cols)):
    print("token", nm, ridge_acc(F[:400].reshape(-1,D), y[:400].ravel(), F[400:].reshape(-1,D), y[400:].ravel(), 4))
fo, xh, yh, tr = [], [], [], []
for i, sc in enumerate(scenes):
    for o in sc.objects:
        t = int(o.cy // 12) * 4 + int(o.cx // 12)
        fo.append(F[i, t]); xh.append(int(o.cx // 12)); yh.append(int(o.cy // 12)); tr.append(i < 400)
fo, xh, yh, tr = map(np.array, (fo, xh, yh, tr))
for nm, y in (("objcol", xh), ("objrow", yh)):
    print(nm, ridge_acc(fo[tr], y[tr], fo[~tr], y[~tr], 4))
