"""snapstart/checkpoint/rpc.py against pycriu's generated protobuf messages (the
schema CRIU itself reads): what we encode parses as the same criu_req, and what
CRIU answers decodes to the same fields. No root, no CRIU process."""

from __future__ import annotations

import pytest

from snapstart.checkpoint import rpc

import pycriu  # noqa: E402 - built with CRIU by `make` (the schema CRIU reads)


def test_restore_request_parses_as_the_same_criu_req():
    opts = rpc.RestoreOpts(images_dir_fd=7, work_dir_fd=9, log_file="restore.log",
                           log_level=4, network_lock=3,
                           inherit_fd=(("netns", 11), ("socket:[12345]", 12),
                                       ("pidns", 13)),
                           mmap_page_image=True, images_dir="/dev/shm/x/l1/e")
    req = pycriu.rpc.criu_req()
    req.ParseFromString(rpc.encode_restore(opts))
    assert req.type == pycriu.rpc.RESTORE
    o = req.opts
    assert (o.images_dir_fd, o.work_dir_fd, o.log_file, o.log_level) == (7, 9, "restore.log", 4)
    assert o.network_lock == 3 and o.tcp_established and o.manage_cgroups_mode == 0
    assert [(i.key, i.fd) for i in o.inherit_fd] == list(opts.inherit_fd)
    assert o.images_dir == "/dev/shm/x/l1/e"
    assert o.mmap_page_image                                 # patch 0003's field 72
    # and byte for byte what pycriu would send for the same values
    ref = pycriu.rpc.criu_req()
    ref.type = pycriu.rpc.RESTORE
    ref.opts.CopyFrom(o)
    assert ref.opts.SerializeToString() == req.opts.SerializeToString()


def test_negative_fd_and_no_optional_fields():
    opts = rpc.RestoreOpts(images_dir_fd=-1, work_dir_fd=3, log_file="r.log", log_level=2,
                           network_lock=2, images_dir="/i")
    req = pycriu.rpc.criu_req()
    req.ParseFromString(rpc.encode_restore(opts))
    assert req.opts.images_dir_fd == -1 and not req.opts.HasField("mmap_page_image")
    assert len(req.opts.inherit_fd) == 0


def test_responses_decode_like_pycriu():
    ok = pycriu.rpc.criu_resp()
    ok.type, ok.success = pycriu.rpc.RESTORE, True
    ok.restore.pid = 4242
    got = rpc.decode_response(ok.SerializeToString())
    assert (got.type, got.success, got.pid) == (pycriu.rpc.RESTORE, True, 4242)

    bad = pycriu.rpc.criu_resp()
    bad.type, bad.success = pycriu.rpc.RESTORE, False
    bad.cr_errno, bad.cr_errmsg = -22, "Can't restore: image is damaged"
    bad.status = 3                                            # a field we skip
    got = rpc.decode_response(bad.SerializeToString())
    assert not got.success and got.cr_errno == -22 and "damaged" in got.cr_errmsg
    assert got.pid is None and got.unknown_fields == (11,)


@pytest.mark.parametrize("garbage", [b"", b"\x08", b"\x08\x02\x10", b"\x12\x05ab",
                                     b"\x0b\x00", b"\xff" * 12])
def test_garbage_is_a_decode_error(garbage):
    with pytest.raises(rpc.RpcDecodeError):
        rpc.decode_response(garbage)
