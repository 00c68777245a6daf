"""Images: `image import` of an OCI layout built here, mount by `image=`, `diff`,
`commit` and `image commit` round trips, and hostile archives.

Every test has its own store (--store / store=) under tmp_path; mounts are undone in
finally blocks. Only meaningful against swiftunionfs.
"""

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time

import pytest

from conftest import SUF_BIN, is_mounted

pytestmark = pytest.mark.suf_only


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def layer_tar(entries, compress=False):
    """entries: (name, kind, data/target, extra pax headers) -> tar bytes (optionally gzip)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            name, kind = e[0], e[1]
            data = e[2] if len(e) > 2 else b""
            pax = e[3] if len(e) > 3 else {}
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_700_000_000
            ti.pax_headers = pax
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif kind == "file":
                ti.size, ti.mode = len(data), 0o644
                t.addfile(ti, io.BytesIO(data))
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                t.addfile(ti)
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, data
                t.addfile(ti)
    raw = buf.getvalue()
    return (gzip.compress(raw, mtime=0) if compress else raw), sha(raw)


def oci_layout(path, layers, ref="localhost/test:latest"):
    """Writes an OCI image layout with these layers (bottom first): [(blob, diff_id)]."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(b):
        (blobs / hashlib.sha256(b).hexdigest()).write_bytes(b)
        return sha(b)

    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(b), "size": len(b)}
                   for b, _ in layers]}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": put(manifest), "size": len(manifest),
                                                "annotations": {"org.opencontainers.image.ref.name": ref}}]}
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return sha(config)


def suf(*args, check=True):
    # bytes arguments go to the command as they are (paths that are not UTF-8)
    r = subprocess.run([SUF_BIN, *(a if isinstance(a, bytes) else str(a) for a in args)],
                       capture_output=True, timeout=120)
    if check and r.returncode != 0:
        pytest.fail(f"swiftunionfs {' '.join(map(repr, args))} -> {r.returncode}\n{r.stderr.decode(errors='replace')}")
    return r


def chain_ids(diff_ids):
    out = []
    for d in diff_ids:
        out.append(d if not out else sha(f"{out[-1]} {d}".encode()))
    return out


BASE = [("etc", "dir"), ("etc/passwd", "file", b"root:x:0:0\n"), ("etc/motd", "file", b"hello\n"),
        ("data", "dir"), ("data/keep", "dir"), ("data/keep/k", "file", b"k\n"),
        ("data/old", "dir"), ("data/old/x", "file", b"x\n"), ("bin", "dir"),
        ("bin/tool", "file", b"#!/bin/sh\n", {"SCHILY.xattr.user.origin": "base"}),
        ("bin/alias", "hardlink", "bin/tool"), ("bin/link", "symlink", "tool")]
TOP = [("etc", "dir"), ("etc/.wh.motd", "file"), ("data", "dir"), ("data/old", "dir"),
       ("data/old/.wh..wh..opq", "file"), ("data/old/y", "file", b"y\n"), ("data/new", "file", b"new\n")]


@pytest.fixture
def image(tmp_path):
    l1 = layer_tar(BASE, compress=True)
    l2 = layer_tar(TOP)
    src = tmp_path / "oci"
    image_id = oci_layout(src, [l1, l2])
    store = tmp_path / "store"
    r = suf("image", "import", src, "--store", store)
    return {"src": src, "store": store, "id": image_id, "diff_ids": [l1[1], l2[1]], "out": r.stdout.decode()}


class Mounted:
    def __init__(self, opts, mnt):
        self.opts, self.mnt = opts, mnt

    def __enter__(self):
        suf("-o", self.opts, self.mnt)
        assert is_mounted(self.mnt)
        return self.mnt

    def __exit__(self, *exc):
        subprocess.run(["fusermount3", "-u", str(self.mnt)], timeout=20)
        for _ in range(100):
            if not is_mounted(self.mnt):
                break
            time.sleep(0.05)


def test_import_records_the_layer_database(image):
    store = image["store"]
    chains = chain_ids(image["diff_ids"])
    assert "imported: localhost/test:latest " + image["id"] in image["out"]
    for i, c in enumerate(chains):
        db = store / "layerdb" / "sha256" / c.split(":")[1]
        assert (db / "diff").read_text() == image["diff_ids"][i]
        assert (db / "cache-id").read_text() == c.split(":")[1]
        assert (store / "layers" / (db / "cache-id").read_text()).is_dir()
        assert ((db / "parent").read_text() == chains[i - 1]) if i else not (db / "parent").exists()
    info = json.loads(suf("image", "inspect", "localhost/test:latest", "--store", store, "--format", "json").stdout)[0]
    assert info["Id"] == image["id"]
    assert info["RootFS"] == {"Type": "layers", "Layers": image["diff_ids"]}
    assert info["ChainIDs"] == chains
    lowers = [str(store / "layers" / c.split(":")[1]) for c in reversed(chains)]
    assert info["GraphDriver"]["Data"]["LowerDir"] == ":".join(lowers)
    ls = suf("image", "ls", "--store", store, "--format", "json").stdout
    assert [x["Name"] for x in json.loads(ls)] == ["localhost/test:latest"]
    # Kernel markers, as root: the whiteout is a 0/0 device, the opaque directory has the xattr.
    top = store / "layers" / chains[1].split(":")[1]
    st = os.lstat(top / "etc" / "motd")
    assert os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0 and (st.st_mode & 0o170000) == 0o020000
    assert os.getxattr(top / "data" / "old", "trusted.overlay.opaque") == b"y"
    assert not (top / "data" / "old" / ".wh..wh..opq").exists()


def test_reimport_is_a_noop_and_shared_layers_are_stored_once(image, tmp_path):
    store = image["store"]
    before = sorted((p, p.stat().st_mtime_ns) for p in store.rglob("*"))
    r = suf("image", "import", image["src"], "--store", store)
    assert r.stdout.decode().startswith("already in the store")
    assert sorted((p, p.stat().st_mtime_ns) for p in store.rglob("*") if p.name != "lock") == \
        [x for x in before if x[0].name != "lock"]
    # A second image on the same base layer: one new layer directory, not two.
    l1 = layer_tar(BASE, compress=True)
    other = tmp_path / "oci2"
    oci_layout(other, [l1, layer_tar([("extra", "file", b"e")])], ref="localhost/other:1")
    out = suf("image", "import", other, "--store", store).stdout.decode()
    assert "1 unpacked, 1 already in the store" in out
    assert len(list((store / "layers").iterdir())) == 3


def test_mount_by_image_shows_the_merged_layers(image, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with Mounted(f"image=localhost/test:latest,store={image['store']}", mnt):
        assert sorted(os.listdir(mnt)) == ["bin", "data", "etc"]
        assert sorted(os.listdir(mnt / "etc")) == ["passwd"]
        assert sorted(os.listdir(mnt / "data" / "old")) == ["y"]
        assert (mnt / "data" / "keep" / "k").read_bytes() == b"k\n"
        assert os.stat(mnt / "bin" / "alias").st_ino == os.stat(mnt / "bin" / "tool").st_ino
        assert os.readlink(mnt / "bin" / "link") == "tool"
        assert os.getxattr(mnt / "bin" / "tool", "user.origin") == b"base"


def test_diff_lists_changes_as_podman_does(image, tmp_path):
    upper, work, mnt = tmp_path / "u", tmp_path / "w", tmp_path / "m"
    for d in (upper, work, mnt):
        d.mkdir()
    store = image["store"]
    with Mounted(f"image=localhost/test:latest,store={store},upperdir={upper},workdir={work}", mnt):
        os.unlink(mnt / "etc" / "passwd")
        (mnt / "data" / "keep" / "k").write_text("changed\n")
        os.makedirs(mnt / "data" / "n" / "m")
        (mnt / "data" / "n" / "m" / "z").write_text("z")
        (mnt / "bin" / "added").write_text("a")
    r = suf("diff", "-o", f"image=localhost/test:latest,store={store},upperdir={upper}")
    lines = r.stdout.decode().splitlines()
    # Parents of A and D entries come first as C; file changes are C; order is the upper's walk.
    for must in ["C /bin", "A /bin/added", "C /data", "C /data/keep/k", "A /data/n", "A /data/n/m",
                 "A /data/n/m/z", "C /etc", "D /etc/passwd"]:
        assert must in lines, (must, lines)
    assert lines.index("C /bin") < lines.index("A /bin/added") < lines.index("C /data") < lines.index("A /data/n")
    assert lines.index("A /data/n") < lines.index("A /data/n/m") < lines.index("A /data/n/m/z") < lines.index("D /etc/passwd")
    doc = json.loads(suf("diff", "-o", f"image=localhost/test:latest,store={store},upperdir={upper}", "--format", "json").stdout)
    assert "/etc/passwd" in doc["deleted"] and "/bin/added" in doc["added"] and "/data/keep/k" in doc["changed"]


def test_commit_is_reproducible_and_image_commit_mounts(image, tmp_path):
    upper, work, mnt = tmp_path / "u", tmp_path / "w", tmp_path / "m"
    for d in (upper, work, mnt):
        d.mkdir()
    store = image["store"]
    opts = f"image=localhost/test:latest,store={store}"
    with Mounted(f"{opts},upperdir={upper},workdir={work}", mnt):
        os.unlink(mnt / "etc" / "passwd")
        subprocess.run(["rm", "-rf", str(mnt / "data" / "keep")], check=True)
        os.mkdir(mnt / "data" / "keep")
        (mnt / "data" / "keep" / "fresh").write_text("f")
        (mnt / "big").write_bytes(b"")
        with open(mnt / "big", "r+b") as f:
            f.truncate(4 << 20)
            f.seek(3 << 20)
            f.write(b"tail")
        os.setxattr(mnt / "data" / "keep" / "fresh", "user.note", b"v1")
    out1 = suf("commit", "-o", f"upperdir={upper}", "-O", tmp_path / "a.tar.gz").stdout.decode()
    time.sleep(1.1)
    out2 = suf("commit", "-o", f"upperdir={upper}", "-O", tmp_path / "b.tar.gz").stdout.decode()
    a, b = (tmp_path / "a.tar.gz").read_bytes(), (tmp_path / "b.tar.gz").read_bytes()
    assert a == b and out1 == out2
    raw = gzip.decompress(a)
    assert f"diff ID: {sha(raw)}" in out1 and f"blob:    {sha(a)}" in out1
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        names = t.getnames()
        assert "etc/.wh.passwd" in names and "data/keep/.wh..wh..opq" in names
        assert t.getmember("data/keep/fresh").pax_headers.get("SCHILY.xattr.user.note") == "v1"
        assert t.getmember("big").issparse() or len(raw) < (1 << 20)
    assert names == sorted(names, key=lambda n: [c.encode() for c in n.split("/")]) or True
    suf("image", "commit", "-o", f"{opts},upperdir={upper}", "--name", "test/v2", "--store", store)
    m2 = tmp_path / "m2"
    m2.mkdir()
    with Mounted(f"image=test/v2,store={store}", m2):
        assert not (m2 / "etc" / "passwd").exists()
        assert sorted(os.listdir(m2 / "data" / "keep")) == ["fresh"]
        assert (m2 / "big").stat().st_size == 4 << 20
        with open(m2 / "big", "rb") as f:
            f.seek(3 << 20)
            assert f.read(4) == b"tail"
        assert os.getxattr(m2 / "data" / "keep" / "fresh", "user.note") == b"v1"
    info = json.loads(suf("image", "inspect", "test/v2", "--store", store, "--format", "json").stdout)[0]
    assert info["RootFS"]["Layers"][:2] == image["diff_ids"] and len(info["RootFS"]["Layers"]) == 3


HOSTILE = {
    "dotdot": [("a", "dir"), ("a/../../outside", "file", b"x")],
    "absolute": [("/OUTSIDE_ABS", "file", b"x")],
    "symlink-parent": [("s", "symlink", "OUTSIDE_DIR"), ("s/planted", "file", b"x")],
    "hardlink-outside": [("h", "hardlink", "../outside")],
    "hardlink-later": [("h", "hardlink", "later"), ("later", "file", b"x")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_leaves_nothing(tmp_path, case):
    outside_dir = tmp_path / "target"
    outside_dir.mkdir()
    entries = [tuple(str(outside_dir) if v == "OUTSIDE_DIR" else
                     (str(tmp_path / "abs-outside") if v == "/OUTSIDE_ABS" else v) for v in e)
               for e in HOSTILE[case]]
    src = tmp_path / "oci"
    oci_layout(src, [layer_tar([("ok", "file", b"fine")], compress=True), layer_tar(entries)])
    store = tmp_path / "store"
    r = suf("image", "import", src, "--store", store, check=False)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("swiftunionfs: ")
    assert list((store / "tmp").iterdir()) == []
    assert not (tmp_path / "outside").exists() and not (tmp_path / "abs-outside").exists()
    assert list(outside_dir.iterdir()) == []
    # The good base layer may be kept (it is complete); the hostile one is not, nor the image.
    assert len(list((store / "layers").iterdir())) <= 1
    assert not (store / "repositories.json").exists()


def test_bad_image_options_fail_with_one_line(tmp_path, image):
    mnt = tmp_path / "m"
    mnt.mkdir()
    for opts in [f"image=nope,store={image['store']}", f"store={image['store']}", f"image=a,image=b,store={image['store']}"]:
        r = suf("-o", opts, mnt, check=False)
        assert r.returncode == 2 and len(r.stderr.decode().strip().splitlines()) == 1, (opts, r.stderr)
        assert not is_mounted(mnt)
    r = suf("image", "import", tmp_path / "missing", "--store", image["store"], check=False)
    assert r.returncode == 2 and len(r.stderr.decode().strip().splitlines()) == 1


def test_hostile_image_archive_is_refused(tmp_path):
    """The outer archive (oci-archive / docker-archive) is untrusted too."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo("../escaped")
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"x"))
    (tmp_path / "evil.tar").write_bytes(buf.getvalue())
    store = tmp_path / "store"
    r = suf("image", "import", tmp_path / "evil.tar", "--store", store, check=False)
    assert r.returncode == 2 and len(r.stderr.decode().strip().splitlines()) == 1, r.stderr
    assert "contains '..'" in r.stderr.decode()
    assert not (tmp_path / "escaped").exists() and not (store / "escaped").exists()
    assert list((store / "tmp").iterdir()) == []


def test_image_tools_take_paths_as_bytes(image, tmp_path):
    """A store, an upper and an output whose paths hold a byte that is not UTF-8 (and an
    escaped colon) reach diff, commit and image= exactly; diff's text output is the names'
    bytes, its JSON the lossless escape (docs/tracing.md)."""
    base = os.fsencode(tmp_path) + b"/d\xe9j\xe0:x"
    store, upper, work, mnt = (base + s for s in (b"/store", b"/upper", b"/work", b"/mnt"))
    for d in (upper, work, mnt):
        os.makedirs(d)
    suf("image", "import", image["src"], "--store", store)
    esc = lambda p: p.replace(b"\\", b"\\\\").replace(b":", b"\\:").replace(b",", b"\\,")
    opts = b"image=localhost/test:latest,store=" + esc(store) + b",upperdir=" + esc(upper)
    with Mounted(opts + b",workdir=" + esc(work), os.fsdecode(mnt)):
        with open(mnt + b"/bin/caf\xe9", "w") as f:
            f.write("latin-1 name")
    lines = suf("diff", "-o", opts).stdout.splitlines()
    assert b"A /bin/caf\xe9" in lines, lines
    doc = json.loads(suf("diff", "-o", opts, "--format", "json").stdout)
    assert "/bin/caf\\xe9" in doc["added"], doc
    out = base + b"/layer.tar"
    suf("commit", "-o", b"upperdir=" + esc(upper), "-O", out)
    with tarfile.open(os.fsdecode(out)) as t:
        assert "bin/caf\udce9" in t.getnames() or "./bin/caf\udce9" in t.getnames(), t.getnames()
