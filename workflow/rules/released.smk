# Phase 3, evaluate-only (train.released: true): the released AudioSet-trained models stand in for the three
# training stages. Each is fetched and sha256-verified (data.smk, fetch_weights), then written as the pipeline
# checkpoint of its stage, so fine-tuning and every evaluation run from it unchanged.

for _stage, _file in layout.pretrained_weights(CFG).items():

    rule:
        name:
            f"import_released_{_stage}"
        input:
            _file,
        output:
            checkpoint_of(_stage),
        params:
            args=ARGS,
            stage=_stage,
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/train/released_{_stage}.log",
        threads: 1
        shell:
            "python -m pipeline import-weights {input} --stage {params.stage} --out {output} {params.args} 2> {log}"
