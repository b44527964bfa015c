#!/usr/bin/env python3
"""ONNX Runtime baseline for `runnel bench vision`: the same model, photos, preprocessing
(decode, shorter side to 256 bilinear, center crop 224, (x-127)/128, NCHW) and thread count.

    python3 -m venv /tmp/ort && /tmp/ort/bin/pip install onnxruntime numpy pillow
    /tmp/ort/bin/python bench/vision_onnxruntime.py --threads 1 --batch 1 --iterations 50

Latency is per classify call (decode + resize + inference of `batch` images), as runnel
reports it; the last line is images_per_s=.
"""
import argparse, io, os, statistics, time
import numpy as np
from PIL import Image
import onnxruntime as ort

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

def preprocess(data):
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = (np.asarray(img, dtype=np.float32) - 127.0) / 128.0
    return x.transpose(2, 0, 1)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--model", default=os.path.join(ROOT, "assets/models/efficientnet-lite0/model.onnx"))
    ap.add_argument("--images", default=os.path.join(ROOT, "assets/images"))
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    photos = [open(os.path.join(a.images, f), "rb").read() for f in sorted(os.listdir(a.images))]
    nxt = iter(range(10**9))
    def batch():
        return [photos[next(nxt) % len(photos)] for _ in range(a.batch)]
    def run(b):
        x = np.stack([preprocess(p) for p in b])
        return sess.run(None, {name: x})[0]
    run(batch())
    lat = []
    t0 = time.perf_counter()
    for _ in range(a.iterations):
        b = batch()
        t = time.perf_counter()
        run(b)
        lat.append((time.perf_counter() - t) * 1e3)
    total = time.perf_counter() - t0
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, max(0, int(np.ceil(q * len(lat))) - 1))]
    print(f"onnxruntime={ort.__version__} batch={a.batch} threads={a.threads} images={a.iterations * a.batch}")
    print(f"latency_ms p50={p(0.5):.1f} p99={p(0.99):.1f}")
    print(f"per_image_ms={statistics.mean(lat) / a.batch:.1f}")
    print(f"images_per_s={a.iterations * a.batch / total:.1f}")

if __name__ == "__main__":
    main()
