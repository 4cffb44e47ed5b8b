"""The official Python clients against the sim, for sim/tests/fidelity.rs.

    python3 clients.py nodes KUBECONFIG   # kubernetes client: list_node, read_node
    python3 clients.py k8s KUBECONFIG     # kubernetes client: watch, exec, delete
    python3 clients.py s3 ENDPOINT        # boto3: bucket re-create, conditional and part GETs

Prints one JSON object of observations; the Rust test asserts on them (and skips when the
client library is not installed).
"""
import json
import sys
import time


def nodes(kubeconfig):
    from kubernetes import client, config
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()
    out = {}
    # nodes deserialise (every NodeSystemInfo field is required by the client's models)
    listed = v1.list_node()
    out["nodes"] = [n.metadata.name for n in listed.items]
    node = v1.read_node(out["nodes"][0])
    out["kube_proxy_version"] = node.status.node_info.kube_proxy_version
    out["machine_id"] = node.status.node_info.machine_id
    print(json.dumps(out))


def k8s(kubeconfig):
    from kubernetes import client, config, watch
    from kubernetes.stream import stream
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()
    out = {}
    # a watch (the client sends watch=True) sees a configmap created before it
    v1.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-watch"), data={"a": "b"}))
    seen = []
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, "default", timeout_seconds=2):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "py-watch":
            w.stop()
    out["watch"] = seen
    # delete answers a Status for a configmap
    st = v1.delete_namespaced_config_map("py-watch", "default", _preload_content=False)
    out["delete_configmap"] = json.loads(st.data)
    # exec (stdout=True, stderr=True, stdin=False, tty=False)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="py-exec"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))
    v1.create_namespaced_pod("default", pod)
    for _ in range(200):
        if v1.read_namespaced_pod("py-exec", "default").status.phase == "Running":
            break
        time.sleep(0.05)
    out["exec"] = stream(v1.connect_get_namespaced_pod_exec, "py-exec", "default",
                         command=["echo", "hello from exec"], stderr=True, stdin=False,
                         stdout=True, tty=False)
    deleted = v1.delete_namespaced_pod("py-exec", "default", _preload_content=False)
    out["delete_pod_kind"] = json.loads(deleted.data).get("kind")
    print(json.dumps(out))


def s3(endpoint):
    import boto3
    from botocore.client import Config
    from botocore.exceptions import ClientError
    s3c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="minioadmin",
                       aws_secret_access_key="minioadmin", region_name="us-east-1",
                       config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    out = {}

    def err(f):
        try:
            f()
            return None
        except ClientError as e:
            return [e.response["Error"].get("Code"), e.response["ResponseMetadata"]["HTTPStatusCode"]]

    s3c.create_bucket(Bucket="fid")
    out["recreate"] = err(lambda: s3c.create_bucket(Bucket="fid"))
    put = s3c.put_object(Bucket="fid", Key="k", Body=b"0123456789")
    etag = put["ETag"]
    head = s3c.head_object(Bucket="fid", Key="k")
    lm = head["LastModified"]
    import datetime
    past = lm - datetime.timedelta(days=1)
    future = lm + datetime.timedelta(days=1)
    out["if_match_ok"] = s3c.get_object(Bucket="fid", Key="k", IfMatch=etag)["Body"].read().decode()
    out["if_match_bad"] = err(lambda: s3c.get_object(Bucket="fid", Key="k", IfMatch='"0000"'))
    out["if_none_match"] = err(lambda: s3c.get_object(Bucket="fid", Key="k", IfNoneMatch=etag))
    out["if_none_match_other"] = s3c.get_object(
        Bucket="fid", Key="k", IfNoneMatch='"0000"')["Body"].read().decode()
    out["if_modified_since"] = err(lambda: s3c.get_object(Bucket="fid", Key="k", IfModifiedSince=future))
    out["if_modified_since_old"] = s3c.get_object(
        Bucket="fid", Key="k", IfModifiedSince=past)["Body"].read().decode()
    out["if_unmodified_since"] = err(lambda: s3c.get_object(Bucket="fid", Key="k", IfUnmodifiedSince=past))
    # multipart: 5 MiB + 3 bytes, then part GETs
    mpu = s3c.create_multipart_upload(Bucket="fid", Key="mp")
    parts = []
    for n, body in [(1, b"a" * (5 << 20)), (2, b"xyz")]:
        r = s3c.upload_part(Bucket="fid", Key="mp", UploadId=mpu["UploadId"], PartNumber=n, Body=body)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    s3c.complete_multipart_upload(Bucket="fid", Key="mp", UploadId=mpu["UploadId"],
                                  MultipartUpload={"Parts": parts})
    p2 = s3c.get_object(Bucket="fid", Key="mp", PartNumber=2)
    body = p2["Body"].read()
    out["part2"] = {
        "body": body.decode() if len(body) < 64 else f"<{len(body)} bytes>",
        "parts_count": p2.get("PartsCount"),
        "status": p2["ResponseMetadata"]["HTTPStatusCode"],
        "content_range": p2.get("ContentRange"),
    }
    p1 = s3c.get_object(Bucket="fid", Key="mp", PartNumber=1)
    out["part1_len"] = len(p1["Body"].read())
    out["part3"] = err(lambda: s3c.get_object(Bucket="fid", Key="mp", PartNumber=3))
    print(json.dumps(out))


if __name__ == "__main__":
    {"nodes": nodes, "k8s": k8s, "s3": s3}[sys.argv[1]](sys.argv[2])
