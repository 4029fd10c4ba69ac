import boto3

from bubbly_metrics.scan import read_export
from tests.conftest import upload_tree


def test_real_export_reads_from_moto_s3(aws, real_export):
    url = upload_tree(real_export, "smoke", aws)
    local = read_export(str(real_export), export_type="full")
    remote = read_export(url, export_type="full")
    assert local.height == 3
    assert remote.drop("file").equals(local.drop("file"))
    assert boto3.client("s3").list_objects_v2(Bucket="smoke")["KeyCount"] > 0
