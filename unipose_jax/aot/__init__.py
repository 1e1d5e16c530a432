"""Ahead-of-time compilation for GPUs and TPU pods that are not present.

``launch.py --mode=compile --config=... --target=NAME`` compiles the training step (both
parallel forms where the target allows them) and the evaluation step for a named target's
compile-only devices and reports per-device memory against the device's, whether it fits,
the largest per-device batch that fits, FLOPs, collectives, convolutions and a roofline
step-time estimate. Needs the ``[aot]`` extra (libtpu, the CUDA plugin).

Modules: ``targets`` (names, published chip figures), ``topology`` (compile-only devices),
``programs`` (lower, compile, analyse one step), ``hlo`` (facts read from optimised HLO),
``estimate`` (the step-time model), ``report`` (the whole report), ``table`` (its console
form).
"""
