"""Input-pipeline benchmark: images per second of the host pipeline (decode,
crop, batch; threads, worker processes, canvas cache) and of the device
augmentation (see studies/input_benchmark.py).

  python -m experiments.benchmark_input
  python -m experiments.benchmark_input --parts=device   # on a GPU machine
  python -m experiments.benchmark_input --output_dir=D   # also D/input.json and D/input.md
"""

from absl import flags

from experiments import launch
from studies import input_benchmark

_PARTS = flags.DEFINE_list("parts", ["host", "device"], "Which benchmarks to run: host, device.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 256, "Distinct encoded images in the source.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 1024, "Images timed per host-pipeline row.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Host batch size.")
_THREADS = flags.DEFINE_list("threads", ["1", "2", "4"], "num_threads values to try.")
_WORKERS = flags.DEFINE_list("workers", ["2"], "worker_count values to try (1 thread each).")
_DEVICE_BATCHES = flags.DEFINE_list("device_batches", ["32", "64"], "Augmentation batch sizes.")
_DEVICE_STEPS = flags.DEFINE_integer("device_steps", 20, "Timed augmentation steps.")
_OUTPUT_DIR = flags.DEFINE_string(
  "output_dir", "", "Also write input.json (the numbers) and input.md here."
)


def main(argv):
  del argv
  launch.setup()
  result = input_benchmark.measure(
    _PARTS.value,
    num_examples=_NUM_EXAMPLES.value,
    num_images=_NUM_IMAGES.value,
    batch_size=_BATCH.value,
    threads=[int(t) for t in _THREADS.value],
    workers=[int(w) for w in _WORKERS.value],
    device_batches=[int(b) for b in _DEVICE_BATCHES.value],
    device_steps=_DEVICE_STEPS.value,
  )
  print(input_benchmark.format_markdown(result))
  if _OUTPUT_DIR.value:
    input_benchmark.write(result, _OUTPUT_DIR.value)


if __name__ == "__main__":
  launch.run(main)
