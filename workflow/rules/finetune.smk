# Phase 4: one job per dataset x mode, a cross-validation (ESC-50: 5 folds, UrbanSound8K: 10) that holds out each
# fold in turn within one process and writes a metric file per fold as it ends:
#   standalone  ESResNeXt from stage 1 with a new classifier
#   partial     AudioCLIP from stage 2, audio head against the class names' text embeddings
#   full        AudioCLIP from stage 3, likewise
# A fold is too short to pay for a process (and, on a cluster, a submission) of its own. Each fold keeps its own
# checkpoints (runs/finetune/<dataset>/<mode>/fold<k>/): when Snakemake reruns the job (a fold file deleted, the
# job interrupted), folds whose training had finished are only evaluated again.
# One rule per dataset (finetune_esc50, finetune_us8k): a rule's outputs are fixed, and the fold count differs.


for _dataset in layout.FINETUNE_DATASETS:

    rule:
        name:
            f"finetune_{_dataset}"
        input:
            cache=f"{W}/cache/{_dataset}.h5",
            init=lambda w: checkpoint_of(w.mode),
        output:
            layout.finetune_metrics(CFG, _dataset, "{mode}"),
        params:
            args=ARGS,
            dataset=_dataset,
            out_dir=layout.finetune_dir(CFG, _dataset, "{mode}"),
            run_dir=f"{W}/runs/finetune/{_dataset}/{{mode}}",
            settings=section("train", "finetune", _dataset) + section("augment"),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/finetune/{_dataset}/{{mode}}.log",
        benchmark:
            f"{LOGS}/benchmarks/finetune/{_dataset}/{{mode}}.tsv"
        threads: 1
        resources:
            gpu=MODEL_GPUS,
        shell:
            "python -m pipeline finetune --dataset {params.dataset} --mode {wildcards.mode}"
            " --init {input.init} --cache {input.cache} --out-dir {params.out_dir} --run-dir {params.run_dir}"
            " {params.args} --threads {threads} 2> {log}"
