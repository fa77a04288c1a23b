"""The benchmark and quality harness of whisperjav-enhance, kept out of the product package.

It ships in the same wheel and imports only public names of ``whisperjav_enhance``; the
product's CLI reaches it through :mod:`.command` (``whisperjav-enhance bench``), and
``benchmarks/`` holds the scripts that drive it from a checkout.

    command     the command line: add_arguments, run, quality_main (the CLI's hook)
    runner      one benchmark command: prepare, run every strategy, write the folder
    strategies  what is compared (data only)
    strategyrun one strategy: skip reasons, the in-process runner, outputs checked
    inprocess   the spawned process of the in-process loops (status quo, ours, direct)
    poolrun     the pool strategies through whisperjav_enhance.pipeline.run_scenes
    context     backend (auto as the product means it), weights, environment, command
    results     StrategyResult, counting, --append and --repeat
    report      results.md and the plots
    scenesets   seeded scene sets written as WAVs
    scaling     the engine's memory-vs-length and batch-speed checks
    quality, quality_metrics, quality_report   the objective quality comparison
    acceptance  benchmarks/gpu_acceptance.py: every GPU criterion in one command
    product     the one reach into a product module that is moving (telemetry)
"""
