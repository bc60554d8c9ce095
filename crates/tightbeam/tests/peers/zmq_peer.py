"""libzmq peers (pyzmq) for the `zmq` tests. Each prints what it received as JSON lines
and exits 0 when it saw what it was told to, non-zero otherwise.

    python3 zmq_peer.py push   ENDPOINT COUNT [START]   connect, send {"n": START..}
    python3 zmq_peer.py pull   ENDPOINT COUNT           bind, print COUNT bodies
    python3 zmq_peer.py pub    ENDPOINT                 bind, publish under a.readings and
                                                        b.readings every 10 ms, forever
    python3 zmq_peer.py sub    ENDPOINT PREFIX COUNT    connect, print COUNT [topic, body]
    python3 zmq_peer.py req    ENDPOINT COUNT NAME      connect, ask COUNT times, check each
                                                        answer doubles n for NAME
    python3 zmq_peer.py dealer ENDPOINT COUNT NAME      the same through a DEALER
    python3 zmq_peer.py rep    ENDPOINT COUNT           bind, answer COUNT requests
    python3 zmq_peer.py router ENDPOINT COUNT           bind, answer COUNT messages
"""

import json
import sys
import time

import zmq

MODE, ENDPOINT = sys.argv[1], sys.argv[2]
context = zmq.Context()


def body(value):
    return json.dumps(value).encode()


def show(value):
    print(json.dumps(value), flush=True)


if MODE == "push":
    count, start = int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0
    socket = context.socket(zmq.PUSH)
    socket.connect(ENDPOINT)
    for n in range(start, start + count):
        socket.send(body({"n": n, "kind": "temp"}))
    socket.close(linger=10000)
elif MODE == "pull":
    socket = context.socket(zmq.PULL)
    socket.bind(ENDPOINT)
    print("ready", flush=True)
    for _ in range(int(sys.argv[3])):
        show(json.loads(socket.recv()))
elif MODE == "pub":
    socket = context.socket(zmq.PUB)
    socket.bind(ENDPOINT)
    n = 0
    while True:
        socket.send_multipart([b"b.readings", body({"n": n, "kind": "noise"})])
        socket.send_multipart([b"a.readings", body({"n": n, "kind": "temp"})])
        n += 1
        time.sleep(0.01)
elif MODE == "sub":
    socket = context.socket(zmq.SUB)
    socket.connect(ENDPOINT)
    socket.setsockopt(zmq.SUBSCRIBE, sys.argv[3].encode())
    for _ in range(int(sys.argv[4])):
        topic, payload = socket.recv_multipart()
        show({"topic": topic.decode(), "body": json.loads(payload)})
elif MODE in ("req", "dealer"):
    count, name = int(sys.argv[3]), sys.argv[4]
    socket = context.socket(zmq.REQ if MODE == "req" else zmq.DEALER)
    if MODE == "dealer":
        socket.setsockopt(zmq.IDENTITY, name.encode())
    socket.setsockopt(zmq.RCVTIMEO, 30000)
    socket.connect(ENDPOINT)
    for n in range(count):
        request = body({"n": n, "who": name})
        if MODE == "req":
            socket.send(request)
            answer = json.loads(socket.recv())
        else:
            socket.send_multipart([b"", request])
            empty, payload = socket.recv_multipart()
            assert empty == b"", empty
            answer = json.loads(payload)
        assert answer["doubled"] == n * 2 and answer["who"] == name, answer
    show({"answered": count, "who": name})
elif MODE in ("rep", "router"):
    socket = context.socket(zmq.REP if MODE == "rep" else zmq.ROUTER)
    socket.bind(ENDPOINT)
    print("ready", flush=True)
    for _ in range(int(sys.argv[3])):
        if MODE == "rep":
            request = json.loads(socket.recv())
            request["answered_by"] = "rep"
            socket.send(body(request))
        else:
            frames = socket.recv_multipart()
            request = json.loads(frames[-1])
            request["answered_by"] = "router"
            socket.send_multipart(frames[:-1] + [body(request)])
        show(request)
    socket.close(linger=5000)
else:
    sys.exit(f"unknown mode {MODE}")
