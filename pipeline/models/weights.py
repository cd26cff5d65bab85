"""One loader for every weights file a user may bring, strict by default.

Supported files (AUDIOCLIP_FACTS.md section 9):
    audioclip  AudioCLIP-Full-Training.pt / AudioCLIP-Partial-Training.pt: the whole model, 861 keys
    esresnext  ESRNXFBSP.pt / ESResNeXtFBSP_AudioSet.pt: the standalone audio head, 527-class fc
    clip       CLIP.pt: the CLIP RN50 text and image heads (fp32 state_dict, no audio keys)
    clip       RN50.pt: OpenAI's TorchScript archive (fp16), converted to an fp32 state_dict
    resnext    torchvision's ImageNet ResNeXt-50 32x4d weights: the published initialisation of the audio trunk
and our own pipeline checkpoints ({model_name, model_kwargs, state_dict, meta}, training/model_io.py).

read_weights(path) identifies a file by its keys, never by its name, and verifies it:
  - pickles are read with torch.load(weights_only=True): a file that would run code is refused;
  - a file named like a published one must have the published sha256 (a truncated or swapped download fails
    here, not as a shape error later); torchvision names carry a sha256 prefix, checked the same way;
  - a TorchScript archive runs code when loaded, so it is only opened when its sha256 is a published one.
load_weights(model, weights) puts them into an AudioCLIP or a standalone ESResNeXt and says what it did: every
key that is not loaded is either an error (strict) or listed in the report as an explicit, logged replacement
(a classifier of another shape, an audio head left as initialised under CLIP-only weights).
"""
from __future__ import annotations

import logging
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.io import sha256sum
from pipeline.models.checkpoints import load_audio_head, load_state_dict_strict, strip_module_prefix

logger = logging.getLogger(__name__)

# name -> (sha256, kind): the released AudioCLIP assets (Git LFS pointers of release v0.1), the ESResNeXt-fbsp
# release, and OpenAI's RN50 (OpenAI's download URL embeds the file's sha256, which its loader checks).
PUBLISHED = {
    'AudioCLIP-Full-Training.pt': ('2441d35b353352c8b1bbfb8f7c687f46314c3d2909e940eaf763b8c17f632c44', 'audioclip'),
    'AudioCLIP-Partial-Training.pt': ('1921885b6c3b5de0619f2ef4a9700ecbade758a398b34eb064230c30baef0c75', 'audioclip'),
    'CLIP.pt': ('124e6d59d54c0837c456c953b3147adf438a21570d5c5b01ad83f6ad3e78d15e', 'clip'),
    'ESRNXFBSP.pt': ('acfcc6b0a0f07025cc660ed6dcf9b5a05fbd7c8ebf65edaa0a81d88a92ff6834', 'esresnext'),
    'ESResNeXtFBSP_AudioSet.pt': ('502a5dcde1771cf6f3c636780a428575322f842ceb2efac5ed72b0f68b858afe', 'esresnext'),
    'RN50.pt': ('afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762', 'clip'),
}
# torch.hub convention for torchvision weights: `<name>-<first hex digits of the sha256>.pth`.
HUB_HASH_RE = re.compile(r'-([a-f0-9]{8,})\.pth?$')
# Entries of OpenAI's archive that are hyper-parameters, not weights.
OPENAI_EXTRA_KEYS = ('input_resolution', 'context_length', 'vocab_size')
KINDS = ('audioclip', 'esresnext', 'clip', 'resnext')
CLIP_PARTS = ['visual', 'transformer', 'token_embedding', 'positional_embedding', 'ln_final', 'text_projection',
              'logit_scale']


class WeightsError(ValueError):
    """A weights file cannot be used: unreadable, unverified, of an unknown layout, or not fitting the model."""


@dataclass
class Weights:
    path: Path
    kind: str  # one of KINDS
    state_dict: dict
    sha256: str
    published: str | None = None  # the published file it was verified as
    model_name: str | None = None  # pipeline checkpoints: the factory name and arguments that rebuild the model
    model_kwargs: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


@dataclass
class LoadReport:
    path: str
    kind: str
    sha256: str
    published: str | None
    replaced: list[str] = field(default_factory=list)  # keys of the file not loaded (a head replaced)
    kept_initialised: list[str] = field(default_factory=list)  # parts of the model the file does not cover

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a code/ folder; torch.save files are zips without one."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any('/code/' in name or name.endswith('constants.pkl') for name in z.namelist())


def kind_of(keys) -> str | None:
    """Which supported layout a (prefix-free) key set is."""
    keys = set(keys)
    if 'audio.fbsp.m' in keys:
        return 'audioclip'
    if 'fbsp.m' in keys:
        return 'esresnext'
    if 'visual.conv1.weight' in keys and 'token_embedding.weight' in keys:
        return 'clip'
    if 'conv1.weight' in keys and 'layer1.0.conv1.weight' in keys:
        return 'resnext'
    return None


def _verify(path: Path, sha: str, trusted: frozenset) -> str | None:
    """The published name the file was verified as; raise if its name promises a hash it does not have."""
    if path.name in PUBLISHED:
        want = PUBLISHED[path.name][0]
        if sha != want:
            raise WeightsError(f'{path}: sha256 {sha} differs from the published {path.name} ({want}); '
                               f'the file is corrupt, truncated or not the released one')
        return path.name
    match = HUB_HASH_RE.search(path.name)
    if match and not sha.startswith(match.group(1)):
        raise WeightsError(f'{path}: sha256 {sha} does not start with {match.group(1)} as its name promises '
                           f'(torch.hub naming); the file is corrupt or truncated')
    for name, (known, _) in PUBLISHED.items():
        if sha == known:
            return name
    return 'trusted' if sha in trusted else None


def read_weights(path: str | Path, trusted_sha256=()) -> Weights:
    """Read, verify and identify a weights file. `trusted_sha256`: extra hashes of TorchScript archives the
    caller vouches for (tests, mirrors); published ones are always accepted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: weights file not found')
    sha = sha256sum(path)
    published = _verify(path, sha, frozenset(trusted_sha256))
    extra: dict = {}
    if is_torchscript(path):
        if published is None:
            raise WeightsError(f'{path}: a TorchScript archive runs code when loaded; its sha256 {sha} is not a '
                               f'published one, so it is refused')
        with warnings.catch_warnings():  # torch.jit.load is deprecated, and OpenAI's archive only exists as one
            warnings.simplefilter('ignore', FutureWarning)
            state = torch.jit.load(str(path), map_location='cpu').state_dict()
        # OpenAI's archive is fp16 with three hyper-parameter entries; our models are fp32.
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    else:
        try:
            obj = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises several types for unreadable or unsafe pickles
            raise WeightsError(f'{path}: not a readable state_dict with weights_only=True '
                               f'({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""})') from None
        state = _unwrap(obj, path, extra)
        dropped = [k for k in OPENAI_EXTRA_KEYS if k in state]
        if dropped:  # CLIP.pt may carry them too
            logger.info('%s: ignoring hyper-parameter entries %s', path, ', '.join(dropped))
            state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    state = strip_module_prefix(state)
    kind = kind_of(state)
    if kind is None:
        raise WeightsError(f'{path}: unknown weights layout (not AudioCLIP, ESResNeXt-fbsp, CLIP or torchvision '
                           f'ResNeXt); first keys: {", ".join(list(state)[:5])}')
    return Weights(path, kind, state, sha, published, **extra)


def _unwrap(obj, path: Path, extra: dict) -> dict:
    """The state_dict inside a loaded object: a raw state_dict, a pipeline checkpoint, or {'model'|'state_dict': sd}."""
    if isinstance(obj, dict) and {'model_name', 'model_kwargs', 'state_dict'} <= set(obj):
        extra.update(model_name=obj['model_name'], model_kwargs=dict(obj['model_kwargs']), meta=dict(obj.get('meta', {})))
        return obj['state_dict']
    for key in ('model', 'state_dict'):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f'{path}: expected a state_dict (name -> tensor), got {type(obj).__name__}')
    return obj


# ----------------------------------------------------------------------------- into a model

def _is_audioclip(model: nn.Module) -> bool:
    return hasattr(model, 'audio') and hasattr(model, 'visual')


def load_weights(model: nn.Module, weights, log: logging.Logger = logger) -> LoadReport:
    """Load `weights` (a path or Weights) into an AudioCLIP or a standalone ESResNeXt-fbsp; see the module doc."""
    w = weights if isinstance(weights, Weights) else read_weights(weights)
    report = LoadReport(str(w.path), w.kind, w.sha256, w.published)
    try:
        sd = w.state_dict
        if _is_audioclip(model):
            if w.kind == 'audioclip':
                load_state_dict_strict(model, sd, strip_prefix=False)
            elif w.kind == 'clip':
                _load_clip_heads(model, sd, w.path)
                report.kept_initialised = ['audio', 'logit_scale_ai', 'logit_scale_at']
            elif w.kind == 'esresnext':
                report.replaced = load_audio_head(model.audio, sd, log)
                report.kept_initialised = CLIP_PARTS
            else:  # resnext
                report.replaced, kept = _load_imagenet_trunk(model.audio, sd, log)
                report.kept_initialised = [f'audio.{k}' for k in kept] + CLIP_PARTS
        else:
            if w.kind == 'clip':
                raise WeightsError(f'{w.path}: CLIP weights hold no audio head; they cannot initialise '
                                   f'{type(model).__name__}')
            if w.kind == 'audioclip':
                sd = {k[len('audio.'):]: v for k, v in sd.items() if k.startswith('audio.')}
            if w.kind == 'resnext':
                report.replaced, report.kept_initialised = _load_imagenet_trunk(model, sd, log)
            else:
                report.replaced = load_audio_head(model, sd, log)
    except WeightsError:
        raise
    except ValueError as err:  # a strict load's report of missing/unexpected keys: say which file
        raise WeightsError(f'{w.path} ({w.kind}): {err}') from None
    if report.kept_initialised:
        log.warning('%s (%s) does not cover %s: left as initialised', w.path, w.kind, ', '.join(report.kept_initialised))
    return report


def _load_clip_heads(model: nn.Module, sd: dict, path: Path) -> None:
    """Exactly the CLIP keys of the model (everything but audio.* and the two audio logit scales), strictly."""
    expected = {k: v for k, v in model.state_dict().items()
                if not k.startswith('audio.') and k not in ('logit_scale_ai', 'logit_scale_at')}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f'{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}' for k, v in expected.items()
              if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise WeightsError(f'{path}: CLIP weights do not fit {type(model).__name__}: missing {missing[:10]}, '
                           f'unexpected {unexpected[:10]}, shape mismatches {shapes[:10]}')
    model.load_state_dict(sd, strict=False)  # the audio keys are the only ones absent: checked above


def _load_imagenet_trunk(audio_head: nn.Module, sd: dict, log: logging.Logger) -> tuple[list[str], list[str]]:
    """torchvision ImageNet ResNeXt -> the ESResNeXt trunk, with the published adaptation.

    conv1/bn1/layer1..4 are loaded strictly (the 3 colour channels become the 3 frequency bands unchanged); the
    ImageNet fc (1000 classes) is replaced; the window, FBSP and attention gates are not in the file and keep
    their initialisation, except that every attention BatchNorm's weight *and bias* are set to 1, as the
    released code does when it starts from ImageNet weights (AUDIOCLIP_FACTS.md section 3).
    Returns (replaced keys, parts kept as initialised)."""
    target = audio_head.state_dict()
    trunk = [k for k in target if k.split('.')[0] in ('conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4')]
    source = {k: v for k, v in sd.items() if not k.startswith('fc.')}
    problems = [f'missing {k}' for k in trunk if k not in source]
    problems += [f'unexpected {k}' for k in source if k not in trunk]
    problems += [f'{k}: {tuple(source[k].shape)} vs {tuple(target[k].shape)}'
                 for k in trunk if k in source and source[k].shape != target[k].shape]
    if problems:
        raise WeightsError(f'ImageNet ResNeXt weights do not fit the audio trunk ({len(problems)} problems): '
                           + '; '.join(problems[:10]))
    audio_head.load_state_dict({**target, **source}, strict=True)
    replaced = [k for k in sd if k.startswith('fc.')]
    log.warning('audio head replaced: ImageNet fc %s not loaded, the freshly initialised fc %s is kept',
                tuple(sd['fc.weight'].shape) if 'fc.weight' in sd else None, tuple(target['fc.weight'].shape))
    gates = [name for name, _ in audio_head.named_children() if re.fullmatch(r'att\d', name)]
    with torch.no_grad():
        for name in gates:
            bn = getattr(audio_head, name).bn
            bn.weight.fill_(1.0)
            bn.bias.fill_(1.0)
    return replaced, ['window', 'fbsp', 'fc'] + gates


def model_from_weights(path: str | Path | Weights, name: str | None = None, trusted_sha256=(),
                       log: logging.Logger = logger) -> tuple[nn.Module, str, LoadReport]:
    """Build the model a weights file describes and load it: (model, factory name, report).

    Pipeline checkpoints rebuild their own model; released files build the full-size model of their kind
    (`name` overrides the factory name, e.g. to put CLIP weights into another AudioCLIP config)."""
    from pipeline.models.factory import create_model

    w = path if isinstance(path, Weights) else read_weights(path, trusted_sha256)
    if w.model_name:
        name = name or w.model_name
        model = create_model(name, **(w.model_kwargs if name == w.model_name else {}))
    elif w.kind in ('audioclip', 'clip'):
        name = name or 'audioclip-rn50'
        model = create_model(name)
    else:
        name = name or 'esresnext-fbsp'
        classes = w.state_dict['fc.weight'].shape[0] if w.kind == 'esresnext' else 527
        model = create_model(name, num_classes=classes)
    return model, name, load_weights(model, w, log)
