"""Signs random parameter sets with the official aliyunsdkcore signer.

Prints one JSON object per line: the method, the signed URL the SDK would
request, the body parameters (POST), the SDK's own string-to-sign and the
secret. The Rust test `official_sdk.rs` verifies each line.

usage: sign_with_aliyunsdkcore.py COUNT SEED
"""
import json
import random
import sys

from aliyunsdkcore.auth.composer import rpc_signature_composer

ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " *~+/&=%:!'()_.-\"{}[],"
    "温度摄氏é😀"
)


def text(rng, low, high):
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(low, high)))


def main():
    count, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    for i in range(count):
        method = rng.choice(["GET", "POST"])
        params = {"Action": "InvokeThingService", "Version": "2018-01-20"}
        for _ in range(rng.randint(0, 8)):
            params["K" + text(rng, 1, 8)] = text(rng, 0, 24)
        body = {}
        if method == "POST" and rng.random() < 0.5:
            for _ in range(rng.randint(1, 4)):
                body["B" + text(rng, 1, 6)] = text(rng, 0, 16)
        secret = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(30))
        url, string_to_sign = rpc_signature_composer.get_signed_url(
            params, "testid", secret, "JSON", method, body
        )
        print(json.dumps({
            "method": method,
            "url": url,
            "body": body,
            "string_to_sign": string_to_sign,
            "secret": secret,
        }, ensure_ascii=False))


if __name__ == "__main__":
    main()
