# A stand-in for the registry's motoserver/moto:5.0.28 (moto's S3 server from PyPI), the
# S3 store of compose/s3-moto.yml where MinIO's image cannot be pulled.
FROM docker.io/library/python:3.10-slim
RUN pip install --no-cache-dir "moto[server]==5.0.28"
EXPOSE 5000
ENTRYPOINT ["moto_server", "-H", "0.0.0.0"]
