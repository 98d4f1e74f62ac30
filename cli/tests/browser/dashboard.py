"""Drives volley's dashboard in headless Chromium (Debian's chromium +
chromium-driver, through selenium) as an operator would, while a campaign
runs into an smtp-sink:

    /usr/bin/python3 dashboard.py BASE TOKEN CAMPAIGN SINK_DUMP_DIR SHOTS SUPPRESSED

signs in with a wrong token (the error shows) then the right one; watches the
campaign's progress bar advance on the campaigns page; opens the campaign,
presses Suspend and counts what the receiver gets for a few seconds, presses
Resume and sees mail arrive again; searches the suppressions for SUPPRESSED.
Screenshots go to SHOTS. Prints one JSON object of what it saw, for
cli/tests/dashboard.rs to check. Every wait has a deadline.
"""
import json
import os
import sys
import time
import urllib.request

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from chrome import browser


def click(driver, element_id):
    """Clicks an element of a page that redraws itself every second: found
    afresh and clicked until a click lands on a live element."""
    end = time.monotonic() + 20
    while True:
        try:
            driver.find_element(By.ID, element_id).click()
            return
        except StaleElementReferenceException:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def text_of(driver, element_id):
    """An element's text, read again if the page redrew it meanwhile."""
    for _ in range(100):
        try:
            return driver.find_element(By.ID, element_id).text
        except StaleElementReferenceException:
            time.sleep(0.05)
    return driver.find_element(By.ID, element_id).text


def api(base, token, path, body):
    """POSTs JSON to the API with the token, as another operator would."""
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": "Bearer " + token,
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def arrived(dump):
    return len(os.listdir(dump)) if os.path.isdir(dump) else 0


def value(driver, css):
    """A progress bar's value, read again if the page redrew it meanwhile."""
    for _ in range(100):
        try:
            return float(driver.find_element(By.CSS_SELECTOR, css).get_attribute("value") or 0)
        except StaleElementReferenceException:
            time.sleep(0.05)
    return float(driver.find_element(By.CSS_SELECTOR, css).get_attribute("value") or 0)


def main():
    base, token, campaign, dump, shots, suppressed = sys.argv[1:7]
    os.makedirs(shots, exist_ok=True)
    seen = {}
    driver = browser(1200, 900)
    wait = WebDriverWait(driver, 30, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,))
    try:
        # A wrong token: the form says so.
        driver.get(base + "/")
        driver.find_element(By.ID, "token").send_keys("not-a-token")
        driver.find_element(By.ID, "sign-in").click()
        wait.until(ec.presence_of_element_located((By.ID, "error")))
        seen["bad_token_error"] = driver.find_element(By.ID, "error").text
        # The right one.
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "sign-in").click()
        wait.until(ec.presence_of_element_located((By.ID, "nav-campaigns")))
        seen["who"] = driver.find_element(By.ID, "who").text
        seen["cookies"] = [{"name": c["name"], "httpOnly": c.get("httpOnly"),
                            "sameSite": c.get("sameSite")} for c in driver.get_cookies()]
        # The script cannot read the session cookie (HttpOnly).
        seen["script_cookie"] = driver.execute_script("return document.cookie")

        # The progress bar advances without a reload.
        bar = f"#progress-{campaign}"
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, bar)))
        first = value(driver, bar)
        wait.until(lambda d: value(d, bar) > first)
        seen["progress"] = [first, value(driver, bar)]
        time.sleep(1.5)  # two refreshes: the chart has a line
        driver.save_screenshot(os.path.join(shots, "dashboard-campaigns.png"))

        # One campaign: Suspend stops the receiver getting its messages.
        click(driver, f"campaign-link-{campaign}")
        wait.until(ec.element_to_be_clickable((By.ID, "suspend")))
        click(driver, "suspend")
        wait.until(ec.text_to_be_present_in_element((By.ID, "state"), "suspended"))
        time.sleep(2)  # transactions in flight end
        at_suspend = arrived(dump)
        time.sleep(4)
        seen["suspended_arrivals"] = [at_suspend, arrived(dump)]
        seen["suspended_progress"] = value(driver, "#progress")
        driver.save_screenshot(os.path.join(shots, "dashboard-campaign-suspended.png"))

        # Resume: mail flows again.
        wait.until(ec.element_to_be_clickable((By.ID, "resume")))
        click(driver, "resume")
        wait.until(ec.text_to_be_present_in_element((By.ID, "state"), "sending"))
        before = arrived(dump)
        wait.until(lambda d: arrived(dump) > before + 10)
        seen["resumed_arrivals"] = [before, arrived(dump)]
        # The activity table shows what moved, as it moves.
        wait.until(
            lambda d: d.find_element(By.ID, "activity").tag_name == "table")
        seen["activity"] = text_of(driver, "activity")
        # A hold placed with the API shows on the page; released again.
        api(base, token, "/v1/queue/hold", {"campaign": int(campaign)})
        wait.until(ec.presence_of_element_located((By.ID, "held")))
        seen["held"] = text_of(driver, "held")
        driver.save_screenshot(os.path.join(shots, "dashboard-campaign-held.png"))
        api(base, token, "/v1/queue/release", {"campaign": int(campaign)})
        wait.until(ec.invisibility_of_element_located((By.ID, "held")))
        driver.save_screenshot(os.path.join(shots, "dashboard-campaign-resumed.png"))

        # Find a suppressed address.
        click(driver, "nav-suppressions")
        wait.until(ec.presence_of_element_located((By.ID, "search")))
        driver.find_element(By.ID, "search").send_keys(suppressed)
        driver.find_element(By.ID, "search-button").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "search-results"), suppressed))
        seen["suppression_row"] = text_of(driver, "search-results")
        driver.save_screenshot(os.path.join(shots, "dashboard-suppressions.png"))

        click(driver, "nav-sites")
        wait.until(ec.presence_of_element_located((By.ID, "sites")))
        seen["sites"] = text_of(driver, "sites")
        driver.save_screenshot(os.path.join(shots, "dashboard-sites.png"))

        # Sign out: the dashboard asks for a token again.
        click(driver, "sign-out")
        wait.until(ec.presence_of_element_located((By.ID, "sign-in")))
        seen["signed_out"] = True
    except Exception as err:  # what the page showed, for the test's message
        seen["error"] = f"{type(err).__name__}: {err}"
        seen["page"] = driver.find_element(By.TAG_NAME, "body").text[:2000]
        driver.save_screenshot(os.path.join(shots, "dashboard-failure.png"))
    finally:
        driver.quit()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
