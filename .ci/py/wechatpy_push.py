"""wechatpy's WeChatCrypto against wxhub's push gateway (issue #12).

Encrypts a text push with wechatpy exactly as the platform would in safe
mode, posts it to the hub's /push/{appid}, and decrypts the hub's encrypted
passive reply with wechatpy. Prints one JSON line: what the reply said.

Argument: a JSON object with url, token, aes_key, appid, to, openid,
content, timestamp.
"""

import json
import sys
import urllib.request

from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import to_text


def main() -> None:
    cfg = json.loads(sys.argv[1])
    crypto = WeChatCrypto(cfg["token"], cfg["aes_key"], cfg["appid"])
    ts = str(cfg["timestamp"])
    nonce = "1320562132"
    xml = (
        "<xml><ToUserName><![CDATA[{to}]]></ToUserName>"
        "<FromUserName><![CDATA[{openid}]]></FromUserName>"
        "<CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        "<Content><![CDATA[{content}]]></Content><MsgId>987654321012345</MsgId></xml>"
    ).format(to=cfg["to"], openid=cfg["openid"], ts=ts, content=cfg["content"])
    # wechatpy's envelope carries Encrypt and MsgSignature; the platform
    # sends Encrypt in the body and the signature in the query.
    sealed = crypto.encrypt_message(xml, nonce, ts)
    fields = {}
    import xml.etree.ElementTree as ET

    for child in ET.fromstring(sealed):
        fields[child.tag] = child.text
    body = "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{}]]></Encrypt></xml>".format(
        cfg["to"], fields["Encrypt"]
    )
    import hashlib

    signature = hashlib.sha1("".join(sorted([cfg["token"], ts, nonce])).encode()).hexdigest()
    query = "signature={}&timestamp={}&nonce={}&openid={}&encrypt_type=aes&msg_signature={}".format(
        signature, ts, nonce, cfg["openid"], fields["MsgSignature"]
    )
    req = urllib.request.Request(
        cfg["url"] + "?" + query, data=body.encode(), headers={"Content-Type": "text/xml"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = to_text(resp.read())
    reply = {}
    for child in ET.fromstring(answer):
        reply[child.tag] = child.text
    plain = crypto.decrypt_message(answer, reply["MsgSignature"], reply["TimeStamp"], reply["Nonce"])
    msg = parse_message(plain)
    print(json.dumps({"type": msg.type, "content": msg.content, "target": msg.target, "source": msg.source}))


if __name__ == "__main__":
    main()
