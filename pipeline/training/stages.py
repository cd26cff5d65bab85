"""What trains in each stage of the paper, and on what.

  clip      (embedded profile only) image-text pre-training of the tiny CLIP heads on a synthetic
            image-caption corpus (data/captions.py), standing in for OpenAI's CLIP weights
  stage 1   ESResNeXt-FBSP alone, multi-label BCE on AudioSet (train split)
  stage 2   AudioCLIP "partial": audio head from stage 1, CLIP text and image heads frozen
  stage 3   AudioCLIP "full": all three heads jointly, from stage 2
  finetune  per dataset x mode on ESC-50 / UrbanSound8K, fold by fold (cross_validate):
              standalone  ESResNeXt from stage 1 with a new classifier, cross-entropy
              partial/full AudioCLIP from stage 2/3, audio head + FBSP + audio logit scales against the
                          text embeddings of the class names (the released "cooperative" protocol)

The loop itself is engine.Trainer; evaluation helpers live in pipeline.evaluation.evaluate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipeline import layout
from pipeline.config import Config
from pipeline.data.datasets import (AudioCacheDataset, audio_dataset, class_names, collate, fold_split,
                                    split_indices, video_indices)
from pipeline.evaluation import evaluate
from pipeline.evaluation.metrics import confusion_matrix
from pipeline.io import write_json
from pipeline.models.checkpoints import load_audio_head
from pipeline.models.factory import MODEL_CONFIGS, create_model
from pipeline.models.loss import audioclip_loss, same_text_positives, standalone_loss
from pipeline.models.weights import load_weights, read_weights
from pipeline.training import distributed
from pipeline.training.engine import OptimSettings, Speed, Trainer, resolve_device, seed_everything
from pipeline.training.model_io import load_model, save_model

log = logging.getLogger(__name__)

# Parameters that never take weight decay: the released trainer's second optimiser group (FBSP and the audio
# logit scales), and the image-text logit scale, which only trains in stage 3 (decay would pull exp(s) to 1).
NO_DECAY_PREFIXES = ("audio.fbsp.", "fbsp.", "logit_scale")
CLIP_PREFIXES = ("visual.", "transformer.", "token_embedding.", "positional_embedding", "ln_final.",
                 "text_projection", "logit_scale")


def param_groups(model: torch.nn.Module) -> list[dict]:
    """Two groups as released: everything trainable with weight decay; FBSP and audio logit scales without."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.startswith(NO_DECAY_PREFIXES) else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def freeze(model: torch.nn.Module, trainable_prefixes: tuple[str, ...]) -> list[torch.nn.Module]:
    """Freeze every parameter outside `trainable_prefixes`; return the frozen CLIP modules (kept in eval mode
    so their BatchNorm statistics do not drift while 'frozen')."""
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(trainable_prefixes)
    frozen = []
    if not any(n.startswith(trainable_prefixes) for n, _ in model.visual.named_parameters(prefix="visual")):
        frozen.append(model.visual)
    if not any(n.startswith(trainable_prefixes) for n, _ in model.transformer.named_parameters(prefix="transformer")):
        frozen.append(model.transformer)
    return frozen


def positives(cfg: Config, texts: list[str], device: torch.device) -> torch.Tensor | None:
    """Contrastive targets: None = the released diagonal; else items with identical text share the target."""
    return same_text_positives(texts, device) if cfg["loss"]["targets"] == "same_text" else None


def contrastive(cfg: Config, model, out, texts: list[str]) -> torch.Tensor:
    """The AudioCLIP loss of the *global* batch: in a distributed run the features are gathered over the ranks
    (every clip is contrasted with the whole batch, not its rank's slice) and so are the texts that decide the
    positives; on one process it is the plain loss."""
    if distributed.current().enabled:
        from pipeline.models.audioclip import SCALE_NAMES, AudioCLIPOutput

        feats = {k: distributed.gather(v) for k, v in out.features.items()}
        logits = {(a, b): out.scales[SCALE_NAMES[(a, b)]] * feats[a] @ feats[b].T for (a, b) in out.logits}
        out = AudioCLIPOutput(features=feats, logits=logits, scales=out.scales)
        texts = distributed.gather_objects(texts)
    device = next(iter(out.features.values())).device
    return audioclip_loss(model, out, positives=positives(cfg, texts, device))


def _setup(cfg: Config, threads: int | None) -> torch.device:
    if threads:
        torch.set_num_threads(threads)
    seed_everything(cfg["seed"], cfg["train"]["deterministic"], compiled=cfg["train"]["speed"]["compile"])
    return resolve_device(cfg["device"])


def fingerprint(cfg: Config, job: str, *inputs: Path) -> str:
    """Identity of a training job: its name, the whole resolved profile, and each input file's size and mtime."""
    from pipeline.config import params_hash

    files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in map(Path, inputs)]
    return params_hash({"job": job, "params": cfg.params_hash, "inputs": files})


def _common(cfg: Config) -> dict[str, Any]:
    """Trainer arguments every stage takes from the profile."""
    return {"collate": collate, "num_workers": cfg["train"]["num_workers"],
            "checkpoint_seconds": 60 * cfg["train"]["checkpoint_minutes"],
            "speed": Speed.from_dict(cfg["train"]["speed"])}


def _epoch_logger(cfg: Config, out: Path, settings: OptimSettings, **tags: Any):
    """tracking.live: the job's epochs to MLflow as they end (None outside a pipeline invocation, or when off)."""
    if not cfg["tracking"]["live"]:
        return None
    from pipeline.reporting import tracking

    common = {"profile": cfg.profile, "params_hash": cfg.params_hash}
    return tracking.epoch_logger(tracking.job_name(out), {**common, **{k: str(v) for k, v in tags.items()}},
                                 settings.epochs)


def _meta(cfg: Config, **extra: Any) -> dict[str, Any]:
    return {"profile": cfg.profile, "params_hash": cfg.params_hash, **extra}


# --- stage 1 -----------------------------------------------------------------------------------------
def train_stage1(cfg: Config, cache: Path, out: Path, run_dir: Path, threads: int | None = None,
                 init: Path | None = None) -> None:
    """`init`: the weights the trunk starts from (model.audio_init: imagenet = torchvision's ImageNet
    ResNeXt-50 32x4d with the published adaptation, models/weights.py); None = the default initialisation."""
    if (cfg["model"]["audio_init"] == "imagenet") != (init is not None):
        raise ValueError(f"model.audio_init is {cfg['model']['audio_init']!r}: stage 1 needs --init <ImageNet ResNeXt "
                         f"weights> exactly when it is 'imagenet'")
    device = _setup(cfg, threads)
    names = class_names(cache)
    kwargs = {"num_classes": len(names)}
    model = create_model(cfg["model"]["esresnext"], **kwargs)
    if init is not None:
        weights = read_weights(init)
        if weights.kind != "resnext":
            raise ValueError(f"{init}: stage 1 starts from torchvision ImageNet ResNeXt weights, this is {weights.kind}")
        load_weights(model, weights)
    train_set = audio_dataset(cfg.settings, cache, "audioset", split_indices(cache, "train"), train=True)

    def loss_fn(m, batch):
        return standalone_loss(m(batch["audio"]), batch["labels"]) + m.loss_ttf()

    settings = OptimSettings.from_dict(cfg["train"]["stage1"])
    history = Trainer(**_common(cfg), model=model, loss_fn=loss_fn, param_groups=param_groups(model),
                      settings=settings, train_dataset=train_set, run_dir=run_dir, device=device, seed=cfg["seed"],
                      fingerprint=fingerprint(cfg, "stage1", cache, *([init] if init else [])), desc="stage1",
                      on_epoch=_epoch_logger(cfg, out, settings, kind="train", stage="stage1",
                                             model=cfg["model"]["esresnext"])).fit()
    if distributed.current().is_main:  # one writer in a distributed run
        save_model(out, model, cfg["model"]["esresnext"], kwargs,
                   _meta(cfg, stage="stage1", class_names=names, history=history))


# --- stages 2 and 3 (and the embedded profile's CLIP pre-training) ----------------------------------------
def _video_train_set(cfg: Config, cache: Path, image_size: int) -> AudioCacheDataset:
    """AudioSet train clips that have video: only they carry all three modalities."""
    train_idx = video_indices(cache, split_indices(cache, "train"))
    return audio_dataset(cfg.settings, cache, "audioset", train_idx, train=True, with_frames=True,
                         image_size=image_size)


def _clip_heads(cfg: Config, clip_init: Path | None) -> torch.nn.Module:
    """A fresh AudioCLIP whose text and image heads come from `model.clip_init`."""
    model = create_model(cfg["model"]["audioclip"])
    source = cfg["model"]["clip_init"]
    if source == "openai":
        if clip_init is None:
            raise ValueError("model.clip_init: openai needs the CLIP weights (--clip-init RN50.pt or CLIP.pt)")
        weights = read_weights(clip_init)
        if weights.kind != "clip":
            raise ValueError(f"{clip_init}: model.clip_init: openai takes CLIP RN50 weights (RN50.pt, CLIP.pt), "
                             f"this is {weights.kind}")
        load_weights(model, weights)
    if source == "synthetic":
        if clip_init is None:
            raise ValueError("model.clip_init: synthetic needs the pre-trained CLIP heads (--clip-init)")
        pretrained, _ = load_model(clip_init)
        clip_state = {k: v for k, v in pretrained.state_dict().items() if k.startswith(CLIP_PREFIXES)}
        missing = model.load_state_dict(clip_state, strict=False)
        if missing.unexpected_keys or any(k.startswith(CLIP_PREFIXES) for k in missing.missing_keys):
            raise ValueError(f"{clip_init}: CLIP heads do not match {cfg['model']['audioclip']}: {missing}")
    return model


def pretrain_clip(cfg: Config, out: Path, run_dir: Path, threads: int | None = None) -> None:
    """Image-text contrastive training of the CLIP heads alone on the synthetic caption corpus
    (pipeline.data.captions); the audio head is not used."""
    from pipeline.data.captions import CaptionImageDataset

    device = _setup(cfg, threads)
    name = cfg["model"]["audioclip"]
    model = create_model(name)
    freeze(model, CLIP_PREFIXES)
    train_set = CaptionImageDataset(cfg["data"]["synthetic"]["captions"]["images_per_caption"],
                                    MODEL_CONFIGS[name]["vision_cfg"]["image_size"], seed=cfg["seed"])

    def loss_fn(m, batch):
        device_ = batch["image"].device
        out_ = m(image=batch["image"], text=m.tokenize(batch["text"]).to(device_))
        return contrastive(cfg, m, out_, batch["text"])

    settings = OptimSettings.from_dict(cfg["train"]["clip_pretrain"])
    history = Trainer(**_common(cfg), model=model, loss_fn=loss_fn, param_groups=param_groups(model),
                      settings=settings, train_dataset=train_set, run_dir=run_dir, device=device, seed=cfg["seed"],
                      frozen_modules=[model.audio],
                      fingerprint=fingerprint(cfg, "clip"), desc="clip",
                      on_epoch=_epoch_logger(cfg, out, settings, kind="train", stage="clip", model=name)).fit()
    if distributed.current().is_main:  # one writer in a distributed run
        save_model(out, model, name, {}, _meta(cfg, stage="clip", captions=[t for _, t in train_set.pairs],
                                               history=history))


def _audioclip_stage(cfg: Config, stage: str, init: Path, cache: Path, out: Path, run_dir: Path,
                     threads: int | None, clip_init: Path | None = None) -> None:
    device = _setup(cfg, threads)
    name = cfg["model"]["audioclip"]
    inputs = [init, cache]
    if stage == "stage2":
        model = _clip_heads(cfg, clip_init)
        inputs += [clip_init] if clip_init else []
        standalone, _ = load_model(init)
        load_audio_head(model.audio, standalone.state_dict())
        frozen = freeze(model, ("audio.", "logit_scale_ai", "logit_scale_at"))
    else:
        model, _ = load_model(init)
        frozen = freeze(model, ("",))  # everything trains
    train_set = _video_train_set(cfg, cache, MODEL_CONFIGS[name]["vision_cfg"]["image_size"])

    def loss_fn(m, batch):
        device_ = batch["audio"].device
        out_ = m(audio=batch["audio"], image=batch["image"], text=m.tokenize(batch["text"]).to(device_))
        return contrastive(cfg, m, out_, batch["text"])

    settings = OptimSettings.from_dict(cfg["train"][stage])
    history = Trainer(**_common(cfg), model=model, loss_fn=loss_fn, param_groups=param_groups(model),
                      settings=settings, train_dataset=train_set, run_dir=run_dir, device=device, seed=cfg["seed"],
                      frozen_modules=frozen,
                      fingerprint=fingerprint(cfg, stage, *inputs), desc=stage,
                      on_epoch=_epoch_logger(cfg, out, settings, kind="train", stage=stage, model=name)).fit()
    if distributed.current().is_main:  # one writer in a distributed run
        save_model(out, model, name, {}, _meta(cfg, stage=stage, class_names=class_names(cache), history=history))


def train_stage2(cfg: Config, stage1: Path, cache: Path, out: Path, run_dir: Path, threads: int | None = None,
                 clip_init: Path | None = None) -> None:
    _audioclip_stage(cfg, "stage2", stage1, cache, out, run_dir, threads, clip_init)


def train_stage3(cfg: Config, stage2: Path, cache: Path, out: Path, run_dir: Path, threads: int | None = None) -> None:
    _audioclip_stage(cfg, "stage3", stage2, cache, out, run_dir, threads)


# --- fine-tuning: k-fold cross-validation ------------------------------------------------------------
def cross_validate(cfg: Config, dataset: str, mode: str, folds: list[int], init: Path, cache: Path, out_dir: Path,
                   run_dir: Path, threads: int | None = None) -> list[dict[str, Any]]:
    """Fine-tune `mode` on `dataset` once per fold, one fold after the other in this process: a fold is short,
    and a process per fold spent as long starting (imports, model, cache) as training (embedded profile: 45
    fold processes took 516 s, these 6 jobs about 290 s). Each fold starts from the same seeded state as in a
    process of its own (the numbers are bit-identical), trains from `init` and writes out_dir/fold<k>.json the
    moment it ends; its checkpoints live in run_dir/fold<k>/, so a rerun after an interruption or a deleted
    file only evaluates again the folds whose training had finished, and trains the rest."""
    return [finetune(cfg, dataset, k, mode, init, cache, Path(layout.fold_metrics(out_dir, k)),
                     Path(run_dir) / f"fold{k}", threads) for k in folds]


# --- one fold -----------------------------------------------------------------------------------------
def finetune(cfg: Config, dataset: str, fold: int, mode: str, init: Path, cache: Path, out: Path,
             run_dir: Path, threads: int | None = None) -> dict[str, Any]:
    """Train on every fold but `fold`, evaluate on `fold` after each epoch; write the metric file."""
    device = _setup(cfg, threads)
    names = class_names(cache)
    train_idx, test_idx = fold_split(cache, fold)
    train_set = audio_dataset(cfg.settings, cache, dataset, train_idx, train=True)
    test_set = audio_dataset(cfg.settings, cache, dataset, test_idx, train=False)
    batch_size = cfg["evaluate"]["batch_size"]
    template = cfg["model"]["prompt_template"]

    model, meta = load_model(init)
    last = {}  # the latest epoch's test-fold predictions: the confusion matrix of the reported (last) epoch

    def scored(pred: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
        last.update(pred=pred, label=label)
        return {"accuracy": float((pred == label).float().mean())}

    if mode == "standalone":
        model.replace_head(len(names))
        frozen: list[torch.nn.Module] = []

        def loss_fn(m, batch):
            return standalone_loss(m(batch["audio"]), batch["label"]) + m.loss_ttf()

        def eval_fn(m):
            return scored(*evaluate.standalone_predictions(m, test_set, batch_size, device))
    else:
        # Released protocol: audio head + FBSP + audio logit scales train; text/image heads and logit_scale frozen.
        frozen = freeze(model, ("audio.", "logit_scale_ai", "logit_scale_at"))

        def loss_fn(m, batch):
            texts = [template.format(names[int(i)]) for i in batch["label"]]
            device_ = batch["audio"].device
            out_ = m(audio=batch["audio"], text=m.tokenize(texts).to(device_))
            return contrastive(cfg, m, out_, texts)

        def eval_fn(m):
            return scored(*evaluate.zero_shot_predictions(m, test_set, names, template, batch_size, device))

    settings = OptimSettings.from_dict(cfg["train"]["finetune"][dataset])
    history = Trainer(**_common(cfg), model=model, loss_fn=loss_fn, param_groups=param_groups(model), settings=settings,
                      train_dataset=train_set, run_dir=run_dir, device=device,
                      seed=cfg["seed"] + fold, eval_fn=eval_fn,
                      frozen_modules=frozen,
                      fingerprint=fingerprint(cfg, f"finetune/{dataset}/{mode}/{fold}", init, cache),
                      desc=f"finetune {dataset} {mode} fold {fold}",
                      on_epoch=_epoch_logger(cfg, out, settings, kind="finetune", dataset=dataset, model=mode,
                                             fold=fold, n_items=len(test_idx), checkpoint=init)).fit()
    if not distributed.current().is_main:
        return {}  # rank 0 evaluated and writes the result
    if not last:  # resumed after the last epoch: nothing was evaluated in this process
        last.update(zip(("pred", "label"), evaluate.standalone_predictions(model, test_set, batch_size, device)
                        if mode == "standalone" else
                        evaluate.zero_shot_predictions(model, test_set, names, template, batch_size, device)))
    accuracies = [h["accuracy"] for h in history]
    result = {
        **_meta(cfg),
        "kind": "finetune", "dataset": dataset, "model": mode, "fold": fold,
        "n_items": len(test_idx), "n_train": len(train_idx), "checkpoint": str(init),
        "metrics": {
            # strict protocol: the last epoch, the test fold never chose anything
            "accuracy": accuracies[-1],
            # the released trainer's protocol: the best epoch *on the test fold* (optimistic)
            "accuracy_best_epoch": max(accuracies),
        },
        "history": history,
        "class_names": names,
        "confusion": confusion_matrix(last["pred"], last["label"], len(names)),  # [true][predicted], last epoch
    }
    write_json(out, result)
    return result
