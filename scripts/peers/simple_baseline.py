"""A standard heat-map network (Xiao et al. 2018, "simple baselines") trained on
exported crops, as a yardstick for the project's models. PyTorch, run in its own
environment: never imported by the project, not a dependency, not run by the tests.

  python scripts/peers/simple_baseline.py --crops=crops.npz --seed=0 --steps=2000 --output=hm0.npz

`--crops` is `compare_baseline.py export`'s file (the eval crops of a run's train and
test splits). A stride-1 3×3 stem, residual blocks of (64, 128, 256, 256) features
down to 1/16, two stride-2 deconvolutions back to 1/4 of the input, a 3×3 conv and a
1×1 to the J maps; BatchNorm, ReLU. Targets: Gaussians of σ `--sigma` heat-map px
at the project's frame (cell i covers input px [s·i, s·i + s), its centre
s·i + (s − 1)/2); the MSE summed over each map, masked by `joints_valid`; Adam 1e-3,
×0.1 at 2/3 and 11/12 of the steps; batch 16; horizontal flips only. Writes the test
split's heat-maps `(N, J, h, w)` and the training time.
"""

import argparse
import time

import numpy as np
import torch
import torch.nn as nn


class Block(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.b1 = nn.BatchNorm2d(cout)
    self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.b2 = nn.BatchNorm2d(cout)
    self.sc = None
    if cin != cout or stride != 1:
      self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
    return torch.relu(y + (x if self.sc is None else self.sc(x)))


def deconv(cin, cout):
  return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def network(num_joints):
  return nn.Sequential(
    nn.Conv2d(3, 32, 3, 1, 1, bias=False),
    nn.BatchNorm2d(32),
    nn.ReLU(),
    Block(32, 64, 2),  # 1/2
    Block(64, 128, 2),  # 1/4
    Block(128, 128, 1),
    Block(128, 256, 2),  # 1/8
    Block(256, 256, 1),
    Block(256, 256, 2),  # 1/16
    Block(256, 256, 1),
    *deconv(256, 128),  # 1/8
    *deconv(128, 128),  # 1/4
    nn.Conv2d(128, 128, 3, 1, 1, bias=False),
    nn.BatchNorm2d(128),
    nn.ReLU(),
    nn.Conv2d(128, num_joints, 1),
  )


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--crops", required=True)
  ap.add_argument("--output", required=True)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--steps", type=int, default=2000)
  ap.add_argument("--stride", type=int, default=4)
  ap.add_argument("--sigma", type=float, default=1.5)
  ap.add_argument("--threads", type=int, default=2)
  a = ap.parse_args()
  torch.set_num_threads(a.threads)
  torch.manual_seed(a.seed)
  d = np.load(a.crops)
  x_tr, j_tr, v_tr = d["train_image"], d["train_joints"], d["train_joints_valid"] > 0
  x_te, perm = d["test_image"], d["flip_perm"]
  n_joints, size, s = j_tr.shape[1], x_tr.shape[2], a.stride
  net = network(n_joints).to(memory_format=torch.channels_last)
  print("parameters", sum(p.numel() for p in net.parameters()) / 1e6, "M", flush=True)
  h = x_tr.shape[1] // s
  yy, xx = np.mgrid[0:h, 0 : size // s]

  def targets(j, v):
    c = (j - (s - 1) / 2) / s
    dx = xx[None, None] - c[..., 0, None, None]
    dy = yy[None, None] - c[..., 1, None, None]
    return (np.exp(-(dx**2 + dy**2) / (2 * a.sigma**2)) * v[..., None, None]).astype(np.float32)

  mean, std = x_tr.reshape(-1, 3).mean(0), x_tr.reshape(-1, 3).std(0)

  def prep(x):
    t = torch.from_numpy(((x - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
    return t.contiguous(memory_format=torch.channels_last)

  opt = torch.optim.Adam(net.parameters(), 1e-3)
  milestones = [round(a.steps * 2 / 3), round(a.steps * 11 / 12)]
  sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1)
  rng = np.random.default_rng(a.seed)
  t0 = time.time()
  net.train()
  for step in range(a.steps):
    idx = rng.integers(0, len(x_tr), 16)
    x, j, v = x_tr[idx].copy(), j_tr[idx].copy(), v_tr[idx].copy()
    flip = rng.random(16) < 0.5
    x[flip] = x[flip, :, ::-1]
    j[flip, :, 0] = size - 1 - j[flip, :, 0]
    j[flip], v[flip] = j[flip][:, perm], v[flip][:, perm]
    out = net(prep(x))
    err = ((out - torch.from_numpy(targets(j, v))) ** 2).sum((2, 3))
    loss = (err * torch.from_numpy(v.astype(np.float32))).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 100 == 0:
      print(step, round(loss.item(), 4), f"{time.time() - t0:.0f}s", flush=True)
  train_s = time.time() - t0
  net.eval()
  with torch.no_grad():
    hm = torch.cat([net(prep(x_te[i : i + 50])) for i in range(0, len(x_te), 50)]).numpy()
  np.savez_compressed(a.output, hm=hm.astype(np.float32), train_s=train_s, steps=a.steps, stride=s)
  print(f"done: {a.steps} steps, {train_s:.0f} s of training -> {a.output}", flush=True)


if __name__ == "__main__":
  main()
