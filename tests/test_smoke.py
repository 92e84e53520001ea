from tests.factories import make_batch


def test_batch_is_stored_and_health_is_ready(client, auth, db, project):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    response = client.post("/v1/batch", json=make_batch(3), headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 3
    stored = db.execute("SELECT count(*) FROM events WHERE project_id = %s", [project]).fetchone()[0]
    assert stored == 3


def test_live_server_answers(live_server):
    import httpx

    assert httpx.get(live_server + "/healthz").json() == {"status": "ok"}
