# Phase 4: one job per dataset x mode x fold (ESC-50: 5 folds, UrbanSound8K: 10), so they run in parallel.
#   standalone  ESResNeXt from stage 1 with a new classifier
#   partial     AudioCLIP from stage 2, audio head against the class names' text embeddings
#   full        AudioCLIP from stage 3, likewise


rule finetune:
    input:
        cache=f"{W}/cache/{{ftdataset}}.h5",
        init=lambda w: checkpoint_of(w.mode),
    output:
        f"{W}/metrics/finetune/{{ftdataset}}/{{mode}}/fold{{fold}}.json",
    params:
        args=ARGS,
        run_dir=f"{W}/runs/finetune/{{ftdataset}}/{{mode}}/fold{{fold}}",
        settings=lambda w: section("train", "finetune", w.ftdataset) + section("augment"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/finetune/{{ftdataset}}/{{mode}}/fold{{fold}}.log",
    benchmark:
        f"{LOGS}/benchmarks/finetune/{{ftdataset}}/{{mode}}/fold{{fold}}.tsv"
    threads: 1
    resources:
        gpu=MODEL_GPUS,
    shell:
        "python -m pipeline finetune --dataset {wildcards.ftdataset} --mode {wildcards.mode} --fold {wildcards.fold}"
        " --init {input.init} --cache {input.cache} --out {output} --run-dir {params.run_dir}"
        " {params.args} --threads {threads} 2> {log}"
