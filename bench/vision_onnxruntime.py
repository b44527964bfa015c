#!/usr/bin/env python3
"""ONNX Runtime baseline for `runnel bench vision`: the same model, photos, preprocessing
(decode, shorter side to 256 bilinear, center crop 224, (x-127)/128, NCHW) and thread count.
With --task detect: YOLOv4-tiny, letterbox to 416 (bilinear, gray 127), /255, NCHW, then
scores (objectness x class), threshold 0.25 and per-class NMS at IoU 0.45, as runnel does.

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

def letterbox(data, side=416):
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    s = min(side / w, side / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    img = img.resize((nw, nh), Image.BILINEAR)
    canvas = Image.new("RGB", (side, side), (127, 127, 127))
    canvas.paste(img, ((side - nw) // 2, (side - nh) // 2))
    x = np.asarray(canvas, dtype=np.float32) / 255.0
    return x.transpose(2, 0, 1)

def nms(rows, score=0.25, iou=0.45):
    out = []
    for r in rows:
        obj = r[:, 4:5]
        scores = obj * r[:, 5:]
        idx, cls = np.nonzero(scores >= score)
        boxes = np.stack([r[idx, 0] - r[idx, 2] / 2, r[idx, 1] - r[idx, 3] / 2,
                          r[idx, 0] + r[idx, 2] / 2, r[idx, 1] + r[idx, 3] / 2], axis=1)
        s = scores[idx, cls]
        keep = []
        for i in np.argsort(-s):
            b = boxes[i]
            ok = True
            for k in keep:
                if cls[k] != cls[i]:
                    continue
                c = boxes[k]
                w = max(0.0, min(b[2], c[2]) - max(b[0], c[0]))
                h = max(0.0, min(b[3], c[3]) - max(b[1], c[1]))
                inter = w * h
                union = (b[2] - b[0]) * (b[3] - b[1]) + (c[2] - c[0]) * (c[3] - c[1]) - inter
                if union > 0 and inter / union > iou:
                    ok = False
                    break
            if ok:
                keep.append(i)
        out.append([(int(cls[k]), float(s[k])) for k in keep])
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--task", choices=["classify", "detect"], default="classify")
    ap.add_argument("--model", default=None)
    ap.add_argument("--images", default=os.path.join(ROOT, "assets/images"))
    a = ap.parse_args()
    if a.model is None:
        a.model = os.path.join(ROOT, "assets/models", "yolov4-tiny" if a.task == "detect" else "efficientnet-lite0", "model.onnx")
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
        if a.task == "detect":
            x = np.stack([letterbox(p) for p in b])
            return nms(sess.run(None, {name: x})[0])
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
