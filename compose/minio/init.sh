#!/bin/sh
# One-shot MinIO set-up for compose (the `createbucket` service, from the minio/mc image):
# the service's bucket, and a MinIO user whose policy reaches that bucket only. The API and
# the workers sign in as that user; the root login stays with MinIO and this script.
# Each `docker compose up` runs it again: every step is safe to repeat, and a changed
# S3_SECRET_KEY in .env takes effect.
set -eu

: "${MINIO_URL:=http://minio:9000}"
for name in MINIO_ROOT_USER MINIO_ROOT_PASSWORD S3_ACCESS_KEY S3_SECRET_KEY S3_BUCKET; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "createbucket: $name is not set; run 'make compose-env' to write .env beside docker-compose.yml" >&2
    exit 1
  fi
done
if [ "$S3_ACCESS_KEY" = "$MINIO_ROOT_USER" ]; then
  echo "createbucket: S3_ACCESS_KEY must differ from MINIO_ROOT_USER: the services get a user" \
       "limited to bucket $S3_BUCKET, never the root login; set another S3_ACCESS_KEY in .env" >&2
  exit 1
fi

# What the service does with its bucket (common/storage.py): read, write, delete and list
# objects, check the bucket exists (HeadBucket is ListBucket), and multipart uploads for
# large objects. Nothing on any other bucket, and no admin actions.
policy="${TMPDIR:-/tmp}/m2fp-service-policy.json"
cat > "$policy" <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::$S3_BUCKET"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::$S3_BUCKET/*"]
    }
  ]
}
POLICY

mc alias set local "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$S3_BUCKET"
mc admin policy create local m2fp-service "$policy"
mc admin user add local "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
# mc of this image refuses to attach a policy already attached ("already in effect");
# that is the state wanted, so only other errors fail the set-up.
if ! out=$(mc admin policy attach local m2fp-service --user "$S3_ACCESS_KEY" 2>&1); then
  case "$out" in
    *"already in effect"*) ;;
    *) echo "$out" >&2; exit 1 ;;
  esac
fi
echo "createbucket: bucket $S3_BUCKET ready; services use MinIO user $S3_ACCESS_KEY (policy m2fp-service)"
