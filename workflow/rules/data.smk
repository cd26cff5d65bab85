# Phase 1: raw datasets in their official layouts.
#   embedded profile: generated here (synthetic, seeded)
#   paper profile:    `source: local` expects them at data.<dataset>.root; `source: download` fetches them.

if CFG["data"]["source"] == "synthetic":

    for _ds in layout.DATASETS:

        rule:
            name:
                f"generate_{_ds}"
            output:
                directory(layout.raw_root(CFG, _ds)),
            params:
                args=ARGS,
                dataset=_ds,
                settings=section("data", "synthetic", _ds),
            conda:
                CONDA_ENV
            log:
                f"{LOGS}/generate/{_ds}.log",
            benchmark:
                f"{LOGS}/benchmarks/generate/{_ds}.tsv"
            threads: 1
            shell:
                "python -m pipeline generate-data --dataset {params.dataset} --out {output} {params.args} --threads {threads} 2> {log}"


if CFG["data"]["source"] == "download":

    for _ds in ("esc50", "us8k"):

        rule:
            name:
                f"download_{_ds}"
            output:
                directory(layout.raw_root(CFG, _ds)),
            params:
                args=ARGS,
                dataset=_ds,
                settings=section("data", "download", _ds),
            conda:
                CONDA_ENV
            log:
                f"{LOGS}/download/{_ds}.log",
            benchmark:
                f"{LOGS}/benchmarks/download/{_ds}.tsv"
            threads: 1
            shell:
                "python -m pipeline acquire --dataset {params.dataset} --root {output} {params.args} 2> {log}"

    rule fetch_audioset:
        output:
            layout.raw_target(CFG, "audioset"),
        params:
            args=ARGS,
            root=layout.raw_root(CFG, "audioset"),
            settings=lambda w: section("data", "download", "audioset") + section("data", "audioset", "train_segments"),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/download/audioset.log",
        benchmark:
            f"{LOGS}/benchmarks/download/audioset.tsv"
        threads: CFG["data"]["download"]["audioset"]["workers"]
        shell:
            "python -m pipeline acquire --dataset audioset --root {params.root} {params.args} 2> {log}"


# Pretrained weights (model.clip_init: openai, model.audio_init: imagenet): downloaded once by their published
# names and sha256-verified; a file already in model.weights_dir is verified and kept.
if layout.pretrained_weights(CFG):

    rule fetch_weights:
        output:
            f"{CFG['model']['weights_dir']}/{{weights_name}}",
        wildcard_constraints:
            weights_name="|".join(re.escape(Path(p).name) for p in layout.pretrained_weights(CFG).values()),
        params:
            args=ARGS,
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/download/{{weights_name}}.log",
        threads: 1
        shell:
            "python -m pipeline fetch-weights {wildcards.weights_name} --out {output} {params.args} 2> {log}"
