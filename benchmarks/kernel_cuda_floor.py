"""How fast can Pillow-mode resize + normalise go on this GPU outside Triton's model?

The package's kernels are Triton: the gather kernel issues a one-byte global load per
tap, and the band kernel trades those loads for float16 tensor-core products on mostly
zero band matrices (see ``kernel_band_variants_h100.txt``). Neither stages the frame in
shared memory and picks bytes out of it, which is what a hand-written kernel does: Triton
3.6 has no gather from shared memory (``tl.gather`` becomes warp shuffles). This script
measures such a kernel, written in CUDA C++ and compiled at run time with NVRTC
(``torch.cuda._compile_kernel``, PyTorch 2.8 or later), to tell how far the package's
Triton kernels are from what the hardware allows. It is a measurement, not a code path
of the package.

Per thread block: an output tile of BY rows x BX columns, all three channels.

1. In chunks of 32 source rows: copy the bytes the tile's columns read into shared
   memory with 16-byte loads; then, lanes over the chunk's rows and warps over output
   columns, read each column's bytes as 4-byte words, split them in registers and
   filter horizontally (Pillow's 22-bit weights, int32 sums, rounded to uint8 as Pillow
   does) into a uint8 tile in shared memory.
2. Filter that tile vertically, round, divide by 255, normalise with IEEE divisions and
   store coalesced rows of each output plane.

Every configuration is compared with ``torch.equal`` against the package's output,
which the test suite checks is bit-exact to Pillow.

    python benchmarks/kernel_cuda_floor.py [--sources 1080x1920,2160x3840]
        [--sizes 312,384,432,504,576,624,768] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from inference_triton_preproc.bench import KERNEL_REPS, Row, _captured, load_frames, time_events
from inference_triton_preproc.kernels.resize import _pil_axis, resize_normalize, resize_tables
from inference_triton_preproc.reference import IMAGENET_MEAN, IMAGENET_STD

SHARED_LIMIT = 200 * 1024  # bytes of shared memory a block may use

# Compiled with BY, BX (tile), MAXR (most source rows a tile reads), MAXB (most bytes of a
# row it reads), TX and TY (taps) defined.
_SOURCE = r"""
__device__ __forceinline__ int pil_round(int acc) {
    int q = (acc + (1 << 21)) >> 22;
    return q < 0 ? 0 : (q > 255 ? 255 : q);
}

// Row strides in shared memory are an odd number of 4-byte words, so that the 32 lanes
// of a warp, one per source row, read 32 different banks.
#define S_STRIDE (MAXB + 4)
#define H_STRIDE (3 * BX + 4)
#define WORDS ((3 * TX + 3) / 4)

extern "C" __global__ void pil_resize_normalize(
    const unsigned char* __restrict__ src, float* __restrict__ out,
    const int* __restrict__ x_first, const int* __restrict__ x_weight,
    const int* __restrict__ y_first, const int* __restrict__ y_weight,
    const float* __restrict__ mean_std,
    int h_in, int w_in, int h_out, int w_out, int bgr)
{
    // Shared memory: both axes' weights of the tile; h, the horizontal pass of every
    // source row the tile reads ([row][channel][column], uint8 as Pillow keeps it); s,
    // 32 source rows at a time, the bytes the tile's columns read (from a 16-byte
    // aligned start b0).
    extern __shared__ __align__(16) unsigned char smem[];
    int* wy = (int*)smem;
    int* wx = wy + BY * TY;
    int* fx = wx + BX * TX;
    unsigned char* h = (unsigned char*)(fx + BX);
    unsigned int* s = (unsigned int*)(h + ((MAXR + TY) * H_STRIDE + 15) / 16 * 16);

    const int oy0 = blockIdx.y * BY, ox0 = blockIdx.x * BX;
    const int oy1 = min(oy0 + BY, h_out) - 1, ox1 = min(ox0 + BX, w_out) - 1;
    const int r0 = y_first[oy0], rows = min(y_first[oy1] + TY, h_in) - r0;
    const int b0 = (3 * x_first[ox0]) & ~15;
    const int vectors = (3 * min(x_first[ox1] + TX, w_in) - b0 + 15) >> 4;
    const int row_bytes = 3 * w_in;
    const unsigned char* frame = src + (long long)blockIdx.z * h_in * row_bytes;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;

    for (int i = threadIdx.x; i < BY * TY; i += blockDim.x)
        wy[i] = oy0 + i / TY <= oy1 ? y_weight[oy0 * TY + i] : 0;
    for (int i = threadIdx.x; i < BX * TX; i += blockDim.x)
        wx[i] = ox0 + i / TX <= ox1 ? x_weight[ox0 * TX + i] : 0;
    for (int i = threadIdx.x; i < BX; i += blockDim.x)
        fx[i] = 3 * x_first[min(ox0 + i, ox1)] - b0;

    for (int rc = 0; rc < rows; rc += 32) {
        const int n = min(32, rows - rc);
        __syncthreads();  // the previous chunk is filtered (and the tables are staged)
        for (int i = threadIdx.x; i < n * vectors; i += blockDim.x) {
            const int r = i / vectors, v = i - r * vectors;
            const uint4 q = ((const uint4*)(frame + (long long)(r0 + rc + r) * row_bytes + b0))[v];
            unsigned int* d = s + r * (S_STRIDE / 4) + 4 * v;
            d[0] = q.x; d[1] = q.y; d[2] = q.z; d[3] = q.w;
        }
        __syncthreads();
        // Lanes over source rows, warps over output columns. A column's bytes are read
        // as 4-byte words (their offset within a word is the same for the whole warp)
        // and split into bytes in registers.
        const unsigned int* row = s + lane * (S_STRIDE / 4);
        for (int x = warp; x < BX && lane < n; x += warps) {
            const int first = fx[x], shift = 8 * (first & 3);
            const unsigned int* p = row + (first >> 2);
            unsigned int words[WORDS];
#pragma unroll
            for (int k = 0; k < WORDS; ++k) words[k] = __funnelshift_r(p[k], p[k + 1], shift);
            int acc[3] = {0, 0, 0};
#pragma unroll
            for (int t = 0; t < TX; ++t) {
                const int w = wx[x * TX + t];
#pragma unroll
                for (int c = 0; c < 3; ++c) {
                    const int b = 3 * t + c;
                    acc[c] += w * (int)((words[b >> 2] >> (8 * (b & 3))) & 0xFF);
                }
            }
#pragma unroll
            for (int c = 0; c < 3; ++c)
                h[(rc + lane) * H_STRIDE + c * BX + x] = (unsigned char)pil_round(acc[c]);
        }
    }
    __syncthreads();
    // Lanes over output columns: coalesced stores.
    float* planes = out + (long long)blockIdx.z * 3 * h_out * w_out;
    for (int i = threadIdx.x; i < 3 * BY * BX; i += blockDim.x) {
        const int x = i % BX, j = i / BX, c = j / BY, y = j - c * BY;
        const int oy = oy0 + y;
        if (oy > oy1 || ox0 + x > ox1) continue;
        const unsigned char* p = h + (y_first[oy] - r0) * H_STRIDE + c * BX + x;
        int acc = 0;
#pragma unroll
        for (int t = 0; t < TY; ++t) acc += wy[y * TY + t] * p[t * H_STRIDE];
        const int plane = bgr ? 2 - c : c;
        const float v = __fdiv_rn(__fdiv_rn((float)pil_round(acc), 255.0f) - mean_std[plane], mean_std[3 + plane]);
        planes[((long long)plane * h_out + oy) * w_out + ox0 + x] = v;
    }
}
"""


def _trim(first: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's table without trailing all-zero tap columns."""
    used = int(np.where(weight != 0, np.arange(weight.shape[1])[None, :] + 1, 0).max())
    return first, np.ascontiguousarray(weight[:, :used])


class CudaPil:
    """The CUDA C++ kernel for one (source size, target size, tile)."""

    def __init__(self, src_hw: tuple[int, int], dst_hw: tuple[int, int], by: int, bx: int, threads: int):
        (h_in, w_in), (h_out, w_out) = src_hw, dst_hw
        if (3 * w_in) % 16:
            raise ValueError("rows must be a multiple of 16 bytes for the 16-byte loads")
        yf, yw = _trim(*_pil_axis(h_in, h_out))
        xf, xw = _trim(*_pil_axis(w_in, w_out))
        ty, tx = yw.shape[1], xw.shape[1]
        oy0 = np.arange(0, h_out, by)
        oy1 = np.minimum(oy0 + by, h_out) - 1
        maxr = int((np.minimum(yf[oy1] + ty, h_in) - yf[oy0]).max())
        ox0 = np.arange(0, w_out, bx)
        ox1 = np.minimum(ox0 + bx, w_out) - 1
        b0 = (3 * xf[ox0]) & ~15
        maxb = int((((3 * np.minimum(xf[ox1] + tx, w_in) - b0) + 15) // 16 * 16).max())
        tables = 4 * (by * ty + bx * tx + bx)
        self.shared = tables + -(-(maxr + ty) * (3 * bx + 4) // 16) * 16 + 32 * (maxb + 4) + 3 * tx + 32
        defines = dict(BY=by, BX=bx, MAXR=maxr, MAXB=maxb, TX=tx, TY=ty)
        self.source = "".join(f"#define {name} {value}\n" for name, value in defines.items()) + _SOURCE
        self.kernel = None
        if self.shared > SHARED_LIMIT:
            return
        self.kernel = torch.cuda._compile_kernel(self.source, "pil_resize_normalize")
        if self.shared >= 48 * 1024:
            self.kernel.set_shared_memory_config(self.shared)
        dev = torch.device("cuda")
        self.tables = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)).to(dev) for a in (xf, xw, yf, yw)]
        self.mean_std = torch.tensor([*IMAGENET_MEAN, *IMAGENET_STD], dtype=torch.float32, device=dev)
        self.grid = (len(ox0), len(oy0), 1)
        self.threads = threads
        self.src_hw, self.dst_hw = src_hw, dst_hw

    def __call__(self, src: torch.Tensor, out: torch.Tensor) -> None:
        n = src.shape[0]
        self.kernel(
            grid=(self.grid[0], self.grid[1], n),
            block=(self.threads, 1, 1),
            shared_mem=self.shared,
            args=[src, out, *self.tables, self.mean_std, *self.src_hw, *self.dst_hw, 1],
        )


def back_to_back(fn, reps: int = KERNEL_REPS, iters: int = 40) -> float:
    """µs per call, ``reps`` calls back to back in one CUDA graph, median of ``iters`` replays
    (the bench's ``floor kernel back-to-back`` row)."""
    device = torch.device("cuda")
    graph = _captured(fn, device, reps)
    return float(np.median(time_events(graph.replay, iters=iters, warmup=5, device=device))) * 1000 / reps


TILES = [(by, bx, threads) for by in (4, 8, 16, 32) for bx in (32, 64) for threads in (128, 256, 512)]
FLOOR_ROW = "floor CUDA C++ kernel back-to-back"


def floor_row(frame: np.ndarray, size: int) -> Row:
    """The fastest exact tile of the sweep on ``frame`` (BGR uint8) -> ``size`` x ``size``, as a
    bench row (pil, batch 1, GPU µs per launch back to back), for runs judged by ``targets.py``."""
    dev = torch.device("cuda")
    src = torch.from_numpy(frame)[None].to(dev)
    src_hw = tuple(src.shape[1:3])
    out = torch.empty((1, 3, size, size), device=dev)
    resize_normalize(src, out, resize_tables(src_hw, (size, size), "pil", dev), IMAGENET_MEAN, IMAGENET_STD, bgr=True)
    expected = out.clone()
    best: tuple[float, tuple[int, int, int]] | None = None
    for tile in TILES:
        kernel = CudaPil(src_hw, (size, size), *tile)
        if kernel.kernel is None:
            continue
        out.fill_(float("nan"))
        kernel(src, out)
        torch.cuda.synchronize()
        if not torch.equal(out, expected):
            continue
        us = back_to_back(lambda: kernel(src, out))
        if best is None or us < best[0]:
            best = (us, tile)
    row = Row("floor", FLOOR_ROW, 1, "pil", size, clock="cuda-events")
    if best is None:
        row.status, row.note = "skipped", "no tile was exact"
        return row
    row.median_ms = row.p99_ms = best[0] / 1000
    row.max_abs_diff = 0.0
    row.note = f"{KERNEL_REPS} launches in one CUDA graph; best exact tile BY {best[1][0]}, BX {best[1][1]}, {best[1][2]} threads"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", default="1080x1920,2160x3840")
    parser.add_argument("--sizes", default="312,384,432,504,576,624,768")
    parser.add_argument("--json")
    args = parser.parse_args()
    dev = torch.device("cuda")
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}")
    results = {}
    for source in args.sources.split(","):
        frames, _ = load_frames(source, 1)
        src = torch.from_numpy(frames[0])[None].to(dev)
        src_hw = tuple(src.shape[1:3])
        for size in map(int, args.sizes.split(",")):
            out = torch.empty((1, 3, size, size), device=dev)
            tables = resize_tables(src_hw, (size, size), "pil", dev)
            resize_normalize(src, out, tables, IMAGENET_MEAN, IMAGENET_STD, bgr=True)
            expected = out.clone()
            package = back_to_back(
                lambda: resize_normalize(src, out, tables, IMAGENET_MEAN, IMAGENET_STD, bgr=True)
            )
            rows = []
            for by, bx, threads in TILES:
                t0 = time.time()
                kernel = CudaPil(src_hw, (size, size), by, bx, threads)
                if kernel.kernel is None:
                    continue
                out.fill_(float("nan"))
                kernel(src, out)
                torch.cuda.synchronize()
                exact = torch.equal(out, expected)
                us = back_to_back(lambda: kernel(src, out)) if exact else None
                rows.append(dict(by=by, bx=bx, threads=threads, exact=exact, us=us, compile_s=time.time() - t0))
            timed = sorted((r for r in rows if r["exact"]), key=lambda r: r["us"])
            key = f"{source}->{size}"
            results[key] = dict(package_us=package, cuda=rows)
            best = timed[0] if timed else None
            mismatched = sum(not r["exact"] for r in rows)
            print(
                f"{key:18s} package {package:6.2f} us | CUDA C++ best "
                + (f"{best['us']:6.2f} us (BY {best['by']}, BX {best['bx']}, {best['threads']} threads)" if best else "-")
                + f" | {len(rows)} tiles, {mismatched} not exact",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), results=results), f, indent=1)


if __name__ == "__main__":
    main()
