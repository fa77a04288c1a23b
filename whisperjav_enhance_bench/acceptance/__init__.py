"""The GPU acceptance: every GPU criterion of the project checked by one command
(``benchmarks/gpu_acceptance.py``), sized to fit a short device lease, with ``--smoke`` running
the same code paths on a CPU for CI.

    plan       sizes, per-section time estimates, the budget guard
    criteria   the criteria (declared once) and the section records
    network    CUDA-vs-CPU agreement, the memory model, memory vs scene length, batch speed
    film       the film-sized set through the benchmark's strategies under the 8 GiB cap
    drivermem  device memory per worker as nvidia-smi reports it
    report, plots   the results folder and the pass/fail table
    main       the command
"""
