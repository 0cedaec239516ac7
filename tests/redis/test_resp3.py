"""RESP3 in the reply framer and the encoders: byte vectors of every type, whole, byte by byte,
nested and in any chunks, and the garbage each must refuse. The vectors are what Redis 7 sends
(checked against redis-server 7.0 after HELLO 3), plus the types no stock command sends
(attributes, blob errors), written from the protocol's specification."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steelyard.redis import resp
from steelyard.redis.resp import ReplyFramer

BYTEWISE = pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])

# One reply of every RESP3 type, each as one frame.
TYPES = {
    "null": b"_\r\n",
    "true": b"#t\r\n",
    "false": b"#f\r\n",
    "double": b",1.5\r\n",
    "double_inf": b",-inf\r\n",
    "double_exp": b",3.1400000000000001\r\n",
    "big_number": b"(123456789012345678901234567890\r\n",
    "verbatim": b"=15\r\ntxt:Some string\r\n",
    "verbatim_crlf": b"=10\r\ntxt:a\r\nb\r\n\r\n",
    "blob_error": b"!21\r\nSYNTAX invalid syntax\r\n",
    "map": b"%2\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n$1\r\nw\r\n",
    "empty_map": b"%0\r\n",
    "set": b"~2\r\n$1\r\ny\r\n$1\r\nx\r\n",
    "push": b">3\r\n$7\r\nmessage\r\n$2\r\nc1\r\n$5\r\nhello\r\n",
    # An attribute, then the reply it annotates: one reply together.
    "attribute": (
        b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.1923\r\n"
        b"*2\r\n:2039123\r\n:9543892\r\n"  # the annotated reply
    ),
    "nested": (
        b"*4\r\n%1\r\n~2\r\n#t\r\n_\r\n*1\r\n(1\r\n,2.5\r\n"  # a map whose key is a set
        b"|1\r\n+ttl\r\n:3600\r\n$1\r\nv\r\n"  # an attributed element inside an array
        b"=7\r\nmkd:*x*\r\n"
    ),
}


def _feed(data: bytes, bytewise: bool) -> tuple[list[bytes], ReplyFramer]:
    f = ReplyFramer()
    out: list[bytes] = []
    if bytewise:
        for i in range(len(data)):
            out += f.feed(data[i : i + 1])
    else:
        out += f.feed(data)
    return out, f


@BYTEWISE
@pytest.mark.parametrize("name", list(TYPES))
def test_each_type_is_one_reply(name, bytewise):
    raw = TYPES[name]
    out, f = _feed(raw + b"+OK\r\n", bytewise)
    assert out == [raw, b"+OK\r\n"]
    assert f.under_way == 0
    assert f.pushes == (1 if name == "push" else 0)


@BYTEWISE
def test_all_types_in_one_stream(bytewise):
    replies = list(TYPES.values())
    out, f = _feed(b"".join(replies), bytewise)
    assert out == replies
    assert f.pushes == 1


def test_redis7_replies_frame_and_parse():
    """Replies as redis-server 7.0 wrote them after HELLO 3, and what hiredis (resp.parse)
    makes of them: the merges that parse rely on these shapes."""
    hgetall = b"%2\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n$1\r\nw\r\n"
    smembers = b"~2\r\n$1\r\ny\r\n$1\r\nx\r\n"
    zrange = b"*2\r\n*2\r\n$1\r\nm\r\n,1.5\r\n*2\r\n$1\r\nn\r\n,3\r\n"
    info = b"=48\r\ntxt:# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\n\r\n"
    mget = b"*2\r\n$1\r\n1\r\n_\r\n"
    stream = hgetall + smembers + zrange + info + mget + b"_\r\n,1.5\r\n#t\r\n"
    assert ReplyFramer().feed(stream) == [
        hgetall, smembers, zrange, info, mget, b"_\r\n", b",1.5\r\n", b"#t\r\n",
    ]  # fmt: skip
    assert resp.parse(hgetall) == {b"f": b"v", b"g": b"w"}
    assert resp.parse(smembers) == [b"y", b"x"]
    assert resp.parse(zrange) == [[b"m", 1.5], [b"n", 3.0]]
    assert resp.parse(info) == b"# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\n"
    assert resp.parse(mget) == [b"1", None]
    assert resp.parse(b"#t\r\n") is True and resp.parse(b"(12\r\n") == b"12"
    push = resp.parse(TYPES["push"])
    assert isinstance(push, list) and push == [b"message", b"c1", b"hello"]


def test_elements_keep_each_as_written():
    assert resp.elements(b"*3\r\n$1\r\n1\r\n_\r\n$-1\r\n") == [b"$1\r\n1\r\n", b"_\r\n", b"$-1\r\n"]
    assert resp.elements(b"%1\r\n$1\r\nf\r\n,2\r\n") == [b"$1\r\nf\r\n", b",2\r\n"]
    assert resp.elements(b"*0\r\n") == [] and resp.elements(b"~0\r\n") == []


@pytest.mark.parametrize("chunk", [1, 3, 64, 70_000])
def test_big_verbatim_and_push_stream_through(chunk):
    """A big verbatim string is read through as it comes, like a big bulk; its head can be
    handed out before its end arrives."""
    big = b"=%d\r\ntxt:%b\r\n" % (200_004, b"x" * 200_000)
    data = big + b"_\r\n"
    f = ReplyFramer()
    out: list[bytes] = []
    heads = b""
    for i in range(0, len(data), chunk):
        out += f.feed(data[i : i + chunk])
        if chunk > 1 and f.under_way > 100_000:
            heads += f.take_head()
    assert heads + out[0] == big and out[1:] == [b"_\r\n"]


@pytest.mark.parametrize(
    "garbage",
    [
        b"_x\r\n",  # a null holds nothing
        b"#x\r\n",  # a boolean is t or f
        b"#\r\n",
        b",\r\n",  # a double needs digits
        b"(\r\n",
        b"%x\r\n",
        b"~y\r\n",
        b">z\r\n",
        b"|q\r\n",
        b"=x\r\nab\r\n",
        b"!-1\r\n",
        b"*1\r\n#maybe\r\n",  # inside an aggregate too
        b"%1\r\n$1\r\nk\r\n_1\r\n",
        b"_\r\n?trailing\r\n",  # a bad type byte after a good reply
        b"#t\r\n\x00\r\n",
    ],
)
def test_garbage_is_refused(garbage):
    with pytest.raises(resp.ProtocolError):
        ReplyFramer().feed(garbage)


def test_garbage_is_refused_byte_by_byte():
    f = ReplyFramer()
    with pytest.raises(resp.ProtocolError):
        for b in b"%1\r\n$1\r\nk\r\n@oops\r\n":
            f.feed(bytes([b]))


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_any_resp3_reply_split_anywhere(data):
    leaf = st.one_of(
        st.binary(max_size=30).map(resp.bulk),
        st.integers(-(10**12), 10**12).map(resp.integer),
        st.just(b"_\r\n"),
        st.sampled_from([b"#t\r\n", b"#f\r\n"]),
        st.floats(allow_nan=False).map(lambda x: b",%r\r\n" % x),
        st.integers(-(10**40), 10**40).map(lambda x: b"(%d\r\n" % x),
        st.binary(max_size=30).map(lambda s: b"=%d\r\ntxt:%b\r\n" % (len(s) + 4, s)),
    )

    def aggregates(kids: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
        items = st.lists(kids, max_size=12)
        pairs = st.lists(st.tuples(kids, kids), max_size=6)
        return st.one_of(
            items.map(resp.array),
            items.map(lambda xs: b"~%d\r\n" % len(xs) + b"".join(xs)),
            pairs.map(lambda ps: b"%%%d\r\n" % len(ps) + b"".join(a + b for a, b in ps)),
            st.tuples(pairs, kids).map(
                lambda t: b"|%d\r\n" % len(t[0]) + b"".join(a + b for a, b in t[0]) + t[1]
            ),
        )

    tree = st.recursive(leaf, aggregates, max_leaves=40)
    replies = data.draw(st.lists(tree, min_size=1, max_size=5))
    stream = b"".join(replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    f = ReplyFramer()
    out = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += f.feed(stream[last:cut])
        last = cut
    assert out == replies


def test_encoders_per_protocol():
    assert resp.null(2) == b"$-1\r\n" and resp.null(3) == b"_\r\n"
    assert resp.null_array(2) == b"*-1\r\n" and resp.null_array(3) == b"_\r\n"
    assert resp.text(b"a\r\nb", 2) == b"$4\r\na\r\nb\r\n"
    assert resp.text(b"a\r\nb", 3) == b"=8\r\ntxt:a\r\nb\r\n"
    pair = [resp.bulk(b"k"), resp.integer(1)]
    assert resp.mapping(pair, 2) == b"*2\r\n$1\r\nk\r\n:1\r\n"
    assert resp.mapping(pair, 3) == b"%1\r\n$1\r\nk\r\n:1\r\n"
    assert resp.push(pair, 3) == b">2\r\n$1\r\nk\r\n:1\r\n"
    assert resp.push(pair, 2) == b"*2\r\n$1\r\nk\r\n:1\r\n"
